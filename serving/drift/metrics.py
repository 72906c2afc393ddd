"""Prometheus metrics of the detector, in the text exposition format (no client library in the drift env).

Counters and gauges keyed by label values; :meth:`Metrics.render` writes ``GET /metrics``. Updated from
the event loop and the test worker, so every change takes one lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable

__all__ = ["Metrics"]

_SPECS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # name: (type, help, label names)
    "kfkit_drift_events_total": ("counter", "CloudEvents taken, by type and outcome (accepted, duplicate)",
                                 ("type", "outcome")),
    "kfkit_drift_rejected_total": ("counter", "CloudEvents refused (malformed, not JSON, too big), by HTTP status",
                                   ("status",)),
    "kfkit_drift_rows_total": ("counter", "Request rows buffered for testing", ()),
    "kfkit_drift_unpaired_total": ("counter", "Responses without a logged request, by kind", ("kind",)),
    "kfkit_drift_window_fill": ("gauge", "Rows in the open window", ()),
    "kfkit_drift_window_size": ("gauge", "Rows at which a window closes", ()),
    "kfkit_drift_backlog": ("gauge", "Closed windows waiting for the test worker", ()),
    "kfkit_drift_windows_total": ("counter", "Windows, by outcome (tested, drift, dropped: backlog full)",
                                  ("outcome",)),
    "kfkit_drift_is_drift": ("gauge", "1 if the last tested window drifted (features or output)", ()),
    "kfkit_drift_feature_is_drift": ("gauge", "1 if the last window's feature test drifted", ()),
    "kfkit_drift_output_is_drift": ("gauge", "1 if the last window's output (probability) test drifted", ()),
    "kfkit_drift_p_val": ("gauge", "Per-feature K-S/chi-square p-value of the last window", ("feature",)),
    "kfkit_drift_psi": ("gauge", "Per-feature population stability index of the last window", ("feature",)),
    "kfkit_drift_feature_distance": ("gauge", "Per-feature K-S statistic of the last window", ("feature",)),
    "kfkit_drift_distance": ("gauge", "Distance of the deciding test (MMD; max PSI; max K-S)", ()),
    "kfkit_drift_threshold": ("gauge", "Threshold of the deciding test (corrected p-value or PSI band)", ()),
    "kfkit_drift_output_p_val": ("gauge", "p-value of the output drift test (PSI for detector=psi)", ()),
    "kfkit_drift_test_seconds_total": ("counter", "Seconds the test worker spent testing windows", ()),
    "kfkit_drift_test_seconds_last": ("gauge", "Seconds the last window's tests took", ()),
    "kfkit_drift_labels_total": ("counter", "Feedback labels, by outcome (joined, unknown, duplicate)",
                                 ("outcome",)),
    "kfkit_drift_performance": ("gauge", "Rolling metric over the labelled window", ("metric",)),
    "kfkit_drift_performance_floor": ("gauge", "Floor of a rolling metric", ("metric",)),
    "kfkit_drift_sink_events_total": ("counter", "Drift events to the sink, by outcome (sent, failed, dropped)",
                                      ("type", "outcome")),
    "kfkit_drift_ready": ("gauge", "1 once the detector is built", ()),
}  # fmt: skip


class Metrics:
    """A small registry: ``inc``/``set`` by name and label values, ``render`` for a scrape."""

    def __init__(self) -> None:
        """Empty series for every declared metric."""
        self._lock = threading.Lock()
        self._values: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _SPECS}

    def inc(self, name: str, *labels: str, by: float = 1.0) -> None:
        """Add ``by`` to a counter."""
        with self._lock:
            series = self._values[name]
            series[labels] = series.get(labels, 0.0) + by

    def set(self, name: str, value: float | None, *labels: str) -> None:
        """Set a gauge (None: NaN, an undefined metric)."""
        with self._lock:
            self._values[name][labels] = math.nan if value is None else float(value)

    def set_many(self, name: str, values: Iterable[tuple[str, float | None]]) -> None:
        """Replace a one-label gauge's series, e.g. every feature's p-value."""
        with self._lock:
            self._values[name] = {(label,): math.nan if v is None else float(v) for label, v in values}

    def get(self, name: str, *labels: str) -> float:
        """A series' value (0 when never set)."""
        with self._lock:
            return self._values[name].get(labels, 0.0)

    def total(self, name: str) -> float:
        """The sum of every series of a metric."""
        with self._lock:
            return sum(self._values[name].values())

    def render(self) -> bytes:
        """The text exposition format, version 0.0.4."""
        lines = []
        with self._lock:
            for name, (kind, text, label_names) in _SPECS.items():
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                series = self._values[name] or ({(): 0.0} if not label_names else {})
                for labels, value in series.items():
                    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(label_names, labels, strict=True))
                    lines.append(f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}")
        return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))
