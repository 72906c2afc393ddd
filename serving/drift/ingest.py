"""Payload CloudEvents in: parse, validate, deduplicate, pair by ce-id, and buffer rows into windows.

One call per HTTP request, on the event loop; nothing here waits. The steps:

1. :func:`kfkit.serving.cloudevents.parse_cloudevent` (binary or structured mode; a missing required
   attribute is a 400 naming it); a plain request is a 400 naming every required header;
2. the type must be KServe's request or response type, the data JSON (415 for another content type);
3. (source, id, type) seen before is a duplicate: answered 200 and counted, nothing buffered (KServe's
   request and response share one id, so the type is part of the key). The keys live in a bounded
   ordered map: the oldest are forgotten first, so memory stays fixed under any stream;
4. request rows go into the open window; a response's probabilities go to the window's output sample and
   are kept by id (bounded) for the labels ``POST /v1/feedback`` joins to them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.serving.cloudevents import REQUIRED_HEADERS, parse_cloudevent
from kfkit.serving.drift.decoding import loads, request_rows, response_probabilities
from kfkit.serving.drift.feedback import Feedback
from kfkit.serving.drift.metrics import Metrics
from kfkit.serving.drift.windows import ClosedWindow, WindowBuffer

__all__ = ["Ingestor", "Accepted", "REQUEST_EVENT", "RESPONSE_EVENT"]

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"
_KINDS = {REQUEST_EVENT: "request", RESPONSE_EVENT: "response"}


@dataclass(slots=True)
class Accepted:
    """What one event did."""

    duplicate: bool
    rows: int
    closed: list[ClosedWindow]
    """Windows the event filled (to hand to the test worker)."""


class Ingestor:
    """The state ingestion owns: seen keys, requests waiting for responses, the open window."""

    def __init__(
        self,
        feature_names: list[str],
        window: WindowBuffer,
        feedback: Feedback,
        metrics: Metrics,
        *,
        dedupe_capacity: int = 100_000,
        warmup_rows: int = 0,
    ) -> None:
        """Ingest for a model taking ``feature_names``.

        Args:
            feature_names: The model's features, in order.
            window: The window buffer.
            feedback: Where logged predictions are kept for labels.
            metrics: Counters.
            dedupe_capacity: (source, id, type) keys remembered; also the bound of requests awaiting responses.
            warmup_rows: Logged probabilities to collect as the output reference (0: not needed).
        """
        self.feature_names, self.window, self.feedback, self.metrics = feature_names, window, feedback, metrics
        self.capacity = dedupe_capacity
        self.seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self.pending: OrderedDict[str, int] = OrderedDict()
        self.warmup_rows = warmup_rows
        self.warmup: list[np.ndarray] = []
        self.warmup_count = 0

    def ingest(self, headers: Mapping[str, str], body: bytes, now: float) -> Accepted:
        """Take one HTTP request's CloudEvent.

        Args:
            headers: Request headers, names in lower case.
            body: The request body.
            now: Arrival time (Unix seconds).

        Raises:
            InvalidInput: anything malformed (400, or 415 for a content type that is not JSON).
        """
        event = parse_cloudevent(headers, body)
        if event is None:
            raise InvalidInput(
                f"not a CloudEvent: send the binary-mode headers {', '.join(REQUIRED_HEADERS)} (KServe's logger "
                "format), or a structured event with Content-Type: application/cloudevents+json"
            )
        attributes = event.attributes
        ce_type = attributes["type"]
        kind = _KINDS.get(ce_type)
        if kind is None:
            raise InvalidInput(f"ce-type {ce_type!r:.100} is not a payload event: send {REQUEST_EVENT} or .response")
        content_type = headers.get("content-type", "") if event.binary else attributes.get("datacontenttype", "")
        if content_type and not _is_json(content_type):
            raise InvalidInput(
                f"content type {content_type!r:.80} is not JSON; the detector reads V1/V2 JSON bodies "
                "(KServe's logger sends application/json)",
                status_code=415,
            )
        key = (str(attributes["source"]), str(attributes["id"]), ce_type)
        if key in self.seen:
            self.seen.move_to_end(key)
            self.metrics.inc("kfkit_drift_events_total", kind, "duplicate")
            return Accepted(duplicate=True, rows=0, closed=[])
        payload = loads(event.data, f"{kind} event data") if event.binary else event.data
        event_id = key[1]
        if kind == "request":
            rows = request_rows(payload, self.feature_names)
            closed = self.window.add(rows, now)
            self.pending[event_id] = rows.shape[0]
            if len(self.pending) > self.capacity:
                self.pending.popitem(last=False)
                self.metrics.inc("kfkit_drift_unpaired_total", "request_without_response")
            n = rows.shape[0]
            self.metrics.inc("kfkit_drift_rows_total", by=n)
        else:
            probabilities = response_probabilities(payload)
            expected = self.pending.pop(event_id, None)
            if expected is None:
                self.metrics.inc("kfkit_drift_unpaired_total", "response_without_request")
            elif expected != probabilities.size:
                self.metrics.inc("kfkit_drift_unpaired_total", "row_count_mismatch")
            self.window.add_probabilities(probabilities)
            self.feedback.remember(event_id, probabilities)
            if self.warmup_count < self.warmup_rows:
                self.warmup.append(probabilities)
                self.warmup_count += probabilities.size
            closed, n = [], probabilities.size
        self.seen[key] = None
        if len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        self.metrics.inc("kfkit_drift_events_total", kind, "accepted")
        return Accepted(duplicate=False, rows=n, closed=closed)

    def take_warmup(self) -> np.ndarray | None:
        """The collected output reference, once complete (then collection stops)."""
        if self.warmup_rows and self.warmup_count >= self.warmup_rows:
            probabilities = np.concatenate(self.warmup)[: self.warmup_rows]
            self.warmup, self.warmup_rows = [], 0
            return probabilities
        return None


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.endswith("+json") and media != "application/cloudevents+json")
