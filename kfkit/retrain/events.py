"""Read a drift CloudEvent (detector -> trigger, docs/drift.md) into a checked :class:`DriftEvent`.

Only the standard library and kfkit's shared CloudEvents parser: every problem is an
:class:`~kfkit.errors.InvalidInput` (a 4xx that Knative does not retry) naming the field and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from kfkit.errors import InvalidInput
from kfkit.serving.cloudevents import parse_cloudevent

__all__ = ["DriftEvent", "EVENT_TYPES", "parse_drift_event"]

EVENT_TYPES = {"org.kfkit.drift.data": "data", "org.kfkit.drift.performance": "performance"}
"""The ``ce-type`` values the trigger takes, and the kind of drift each one reports."""
_JSON_TYPES = ("application/json", "text/json")


@dataclass
class DriftEvent:
    """One tested window, as the detector reported it."""

    id: str
    """``ce-id``: unique per window and kind (with ``source``, the deduplication key)."""
    source: str
    """``ce-source``: ``kfkit-drift/<model name>``."""
    type: str
    """``ce-type``: one of :data:`EVENT_TYPES`."""
    kind: str
    """data or performance."""
    subject: str
    """``<model>/<version>`` the window was scored by (from ``ce-subject``, else the body)."""
    is_drift: bool
    """Whether the window drifted."""
    model: str = ""
    """Model name (``kfkit.model``, else the subject's first part)."""
    version: str = ""
    """Version (``kfkit.version``, else the subject's second part)."""
    window: int | None = None
    """Window index (``kfkit.window``); None when the detector sent none (arrival order is used)."""
    rows: int | None = None
    """Rows in the window."""
    start: str | None = None
    """When the window opened (ISO 8601)."""
    end: str | None = None
    """When the window closed."""
    drifted_features: list[str] = field(default_factory=list)
    """Features whose test said drift."""
    p_val: Any = None
    """p-value(s) of the test, per feature (a list) or one number; non-finite values become None."""
    distance: Any = None
    """Test statistic(s), per feature or one number."""
    threshold: float | None = None
    """Threshold the p-values were compared with (after any correction)."""
    detector: str = ""
    """``meta.name`` (TabularDrift, MMDDrift, ...)."""
    report: str | None = None
    """URL or path of the window's HTML report."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Rolling performance metrics (performance events)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form (status and audit records)."""
        return asdict(self)

    def statistics(self) -> dict[str, Any]:
        """What the test measured, for the audit record: per-feature p-value and distance where known."""
        return {
            "detector": self.detector,
            "threshold": self.threshold,
            "p_val": self.p_val,
            "distance": self.distance,
            "metrics": self.metrics,
        }


def parse_drift_event(headers: Mapping[str, str], body: bytes) -> DriftEvent:
    """Validate a drift CloudEvent (binary or structured mode) and return its facts.

    Args:
        headers: Request headers, names in lower case.
        body: The request body.

    Raises:
        InvalidInput: not a CloudEvent, a required attribute missing, an unknown ``ce-type``, a body that is
            not JSON (415 for a non-JSON content type), or a body without ``data.is_drift``.
    """
    event = parse_cloudevent(headers, body)
    if event is None:
        raise InvalidInput(
            "not a CloudEvent: send a drift event in binary mode (headers ce-specversion: 1.0, ce-id, ce-source, "
            "ce-type: org.kfkit.drift.data, Content-Type: application/json) or as application/cloudevents+json"
        )
    attributes = event.attributes
    kind = EVENT_TYPES.get(str(attributes.get("type", "")))
    if kind is None:
        raise InvalidInput(
            f"CloudEvent type {attributes.get('type')!r} is not a drift event; the trigger takes "
            f"{' and '.join(EVENT_TYPES)}"
        )
    if event.binary:
        content_type = headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if content_type not in _JSON_TYPES and not content_type.endswith("+json"):
            raise InvalidInput(
                f"drift event {attributes['id']!r} has Content-Type {content_type!r}; send the body as "
                "application/json",
                status_code=415,
            )
        payload = _json(event.data, attributes["id"])
    else:
        payload = event.data if not isinstance(event.data, str | bytes) else _json(event.data, attributes["id"])
    return _from_payload(attributes, payload, kind)


def _json(data: str | bytes, event_id: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidInput(f"drift event {event_id!r}: the body is not valid JSON ({e})") from None


def _from_payload(attributes: Mapping[str, Any], payload: Any, kind: str) -> DriftEvent:
    event_id = str(attributes["id"])
    where = f"drift event {event_id!r}"
    if not isinstance(payload, dict):
        raise InvalidInput(f"{where}: the body is {_kind(payload)}, not a JSON object with data.is_drift")
    data = payload.get("data")
    if not isinstance(data, dict) or "is_drift" not in data:
        raise InvalidInput(
            f'{where}: the body has no data.is_drift; send alibi-detect\'s shape {{"data": {{"is_drift": 0|1, '
            '"p_val": [...], "threshold": ..., "distance": [...]}}, "kfkit": {"window": N, ...}}'
        )
    is_drift = data["is_drift"]
    if is_drift not in (0, 1) or isinstance(is_drift, float):
        raise InvalidInput(f"{where}: data.is_drift is {is_drift!r}; send 0, 1, true or false")
    facts = payload.get("kfkit", {})
    if facts is None:
        facts = {}
    if not isinstance(facts, dict):
        raise InvalidInput(f"{where}: kfkit is {_kind(facts)}, not a JSON object")
    meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
    subject = str(attributes.get("subject") or "")
    model = _text(facts, "model", where) or subject.partition("/")[0]
    version = _text(facts, "version", where) or subject.partition("/")[2]
    if not subject:
        subject = f"{model}/{version}" if model else str(attributes["source"])
    features = facts.get("drifted_features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise InvalidInput(f"{where}: kfkit.drifted_features must be a list of feature names")
    metrics = facts.get("metrics", {}) or {}
    if not isinstance(metrics, dict):
        raise InvalidInput(f"{where}: kfkit.metrics is {_kind(metrics)}, not an object of metric values")
    return DriftEvent(
        id=event_id,
        source=str(attributes["source"]),
        type=str(attributes["type"]),
        kind=kind,
        subject=subject,
        is_drift=bool(is_drift),
        model=model,
        version=version,
        window=_count(facts, "window", where),
        rows=_count(facts, "rows", where),
        start=_text(facts, "start", where),
        end=_text(facts, "end", where),
        drifted_features=list(features),
        p_val=_numbers(data.get("p_val"), "data.p_val", where),
        distance=_numbers(data.get("distance"), "data.distance", where),
        threshold=_numbers(data.get("threshold"), "data.threshold", where, many=False),
        detector=str(meta.get("name", "")),
        report=_text(facts, "report", where),
        # A metric not measurable yet (one class among the labels) may come as null: kept out, not refused.
        metrics={str(k): float(v) for k, v in metrics.items() if _number(v) and math.isfinite(v)},
    )


def _count(facts: dict, key: str, where: str) -> int | None:
    value = facts.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{where}: kfkit.{key} is {value!r}; send a whole number >= 0")
    return value


def _text(facts: dict, key: str, where: str) -> str | None:
    value = facts.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise InvalidInput(f"{where}: kfkit.{key} is {_kind(value)}; send a string")
    return str(value)


def _numbers(value: Any, key: str, where: str, *, many: bool = True) -> Any:
    """A number or (``many``) a list of numbers, with NaN and infinities as None (JSON has neither)."""
    if value is None:
        return None
    if _number(value):
        return float(value) if math.isfinite(value) else None
    if many and isinstance(value, list) and all(v is None or _number(v) for v in value):
        return [None if v is None or not math.isfinite(v) else float(v) for v in value]
    raise InvalidInput(f"{where}: {key} is {value!r:.80}; send a number{' or a list of numbers' if many else ''}")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")
