"""The test worker: closed windows are tested on a thread of their own, off the request path.

Ingestion only hands a copy of the window over (a bounded queue: when the worker falls that far behind,
the window is dropped and counted, and ingestion never waits). For each window the worker runs the
deciding test, the per-feature statistics and the output test, records the result, and for a drifted
window writes the HTML report and sends the ``org.kfkit.drift.data`` event.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kfkit.serving.drift.background import drain_and_stop
from kfkit.serving.drift.detectors import Detector, FeatureStats, build
from kfkit.serving.drift.metrics import Metrics
from kfkit.serving.drift.reference import Reference
from kfkit.serving.drift.report import write_report
from kfkit.serving.drift.settings import DriftSettings
from kfkit.serving.drift.sink import DATA_EVENT, DriftEvent, EventSender
from kfkit.serving.drift.windows import ClosedWindow

__all__ = ["TestWorker", "iso_time"]

_log = logging.getLogger("kfkit.serving.drift")


def iso_time(seconds: float) -> str:
    """Unix seconds as RFC 3339 UTC, e.g. 2026-12-01T10:00:00Z."""
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TestWorker:
    """Builds the detectors once, then tests every window it is handed, in order."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        reference: Reference,
        settings: DriftSettings,
        metrics: Metrics,
        sender: EventSender,
        *,
        reports_dir: Path,
        public_url: str,
        performance: Callable[[], dict[str, Any]] = dict,
        backlog: int = 8,
        history: int = 1000,
    ) -> None:
        """Fit the detectors on the reference (the slow part of start-up: alibi-detect imports torch)."""
        self.reference, self.settings, self.metrics, self.sender = reference, settings, metrics, sender
        self.reports_dir, self.public_url, self._performance = reports_dir, public_url.rstrip("/"), performance
        self.detector: Detector = build(settings, reference.rows, categorical=reference.categorical)
        self.stats = FeatureStats.build(settings, reference.rows, reference.categorical)
        self.output_reference: np.ndarray | None = None
        self._output: Detector | None = None
        if settings.output_drift and reference.probabilities is not None:
            self.set_output_reference(reference.probabilities)
        self.queue: queue.Queue[ClosedWindow | None] = queue.Queue(maxsize=backlog)
        self.results: deque[dict[str, Any]] = deque(maxlen=history)
        self.reports: list[dict[str, Any]] = []
        self.busy = False
        self._thread: threading.Thread | None = None

    def set_output_reference(self, probabilities: np.ndarray) -> None:
        """The predictions the output test compares against (published, or the first ones logged)."""
        self.output_reference = np.asarray(probabilities, dtype=np.float32).reshape(-1)
        self._output = None  # built on the worker thread, at the next window

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="kfkit-drift-tests", daemon=True)
        self._thread.start()

    def submit(self, window: ClosedWindow) -> bool:
        """Queue a closed window; False (and counted) when the backlog is full. Never blocks."""
        try:
            self.queue.put_nowait(window)
        except queue.Full:
            self.metrics.inc("kfkit_drift_windows_total", "dropped")
            _log.warning("window %d dropped: %d windows wait for the test worker", window.index, self.queue.qsize())
            return False
        self.metrics.set("kfkit_drift_backlog", self.queue.qsize())
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Test what is queued (up to ``timeout_s``), then stop."""
        if self._thread is None:
            return
        drain_and_stop(self.queue, self._thread, timeout_s, busy=lambda: self.busy)
        self._thread = None

    def _run(self) -> None:
        while True:
            window = self.queue.get()
            try:
                if window is None:
                    return
                self.busy = True
                self.metrics.set("kfkit_drift_backlog", self.queue.qsize())
                self.record(window, self.test(window))
            except Exception:  # a failed test must not kill the worker: log it, go on with the next window
                _log.exception("testing window %s failed", getattr(window, "index", "?"))
            finally:
                self.busy = False
                self.queue.task_done()

    def test(self, window: ClosedWindow) -> dict[str, Any]:
        """Every test of one window; the result as ``GET /v1/drift/windows`` lists it (no side effects)."""
        started = time.perf_counter()
        names = self.reference.feature_names
        result = self.detector.test(window.rows)
        drifted = self.detector.drifted(result, names)
        tabular = result if self.settings.detector == "tabular" else self.stats.tabular.test(window.rows)
        psi = result if self.settings.detector == "psi" else self.stats.psi.test(window.rows)
        if self.settings.detector == "mmd" and result["data"]["is_drift"]:
            drifted = self.stats.tabular.drifted(tabular, names)  # the features K-S also finds shifted
        statistics = [
            {"feature": name, "p_val": p, "distance": d, "psi": v, "drifted": name in drifted}
            for name, p, d, v in zip(
                names, tabular["data"]["p_val"], tabular["data"]["distance"], psi["data"]["distance"], strict=True
            )
        ]
        output = self._test_output(window)
        feature_drift = bool(result["data"]["is_drift"])
        return {
            "window": window.index,
            "start": iso_time(window.start),
            "end": iso_time(window.end),
            "rows": int(window.rows.shape[0]),
            "closed_by": window.reason,
            "detector": self.settings.detector,
            "is_drift": feature_drift or bool(output and output.get("is_drift")),
            "feature_drift": feature_drift,
            "drifted_features": drifted,
            "result": result,
            "output": output,
            "statistics": statistics,
            "test_seconds": time.perf_counter() - started,
            "report": None,
            "event_id": None,
        }

    def _test_output(self, window: ClosedWindow) -> dict[str, Any] | None:
        if not self.settings.output_drift:
            return None
        if self.output_reference is None:
            return {"skipped": "no reference predictions yet (collecting the first logged ones)"}
        if window.probabilities.size < self.settings.min_window_rows:
            return {"skipped": f"{window.probabilities.size} logged predictions in the window"}
        if self._output is None:
            self._output = build(self.settings, self.output_reference.reshape(-1, 1))
        data = self._output.test(window.probabilities.reshape(-1, 1))["data"]
        p_val, distance = data["p_val"], data["distance"]
        return {
            "is_drift": bool(data["is_drift"]),
            "p_val": p_val[0] if isinstance(p_val, list) else p_val,
            "distance": distance[0] if isinstance(distance, list) else distance,
            "threshold": data["threshold"],
            "rows": int(window.probabilities.size),
        }

    def record(self, window: ClosedWindow, result: dict[str, Any]) -> None:
        """Publish a result: metrics, history, and for a drifted window the report and the drift event."""
        m = self.metrics
        m.inc("kfkit_drift_windows_total", "tested")
        m.inc("kfkit_drift_test_seconds_total", by=result["test_seconds"])
        m.set("kfkit_drift_test_seconds_last", result["test_seconds"])
        m.set("kfkit_drift_is_drift", int(result["is_drift"]))
        m.set("kfkit_drift_feature_is_drift", int(result["feature_drift"]))
        stats = result["statistics"]
        m.set_many("kfkit_drift_p_val", ((s["feature"], s["p_val"]) for s in stats))
        m.set_many("kfkit_drift_psi", ((s["feature"], s["psi"]) for s in stats))
        m.set_many("kfkit_drift_feature_distance", ((s["feature"], s["distance"]) for s in stats))
        data = result["result"]["data"]
        distance = data["distance"]
        m.set("kfkit_drift_distance", max(distance) if isinstance(distance, list) else distance)
        m.set("kfkit_drift_threshold", data["threshold"])
        output = result["output"] or {}
        if "is_drift" in output:
            m.set("kfkit_drift_output_is_drift", int(output["is_drift"]))
            m.set("kfkit_drift_output_p_val", output["p_val"] if output["p_val"] is not None else output["distance"])
        if result["is_drift"]:
            m.inc("kfkit_drift_windows_total", "drift")
            self._report(window, result)
            self.sender.send(self.event(result))
        self.results.append(result)

    def _report(self, window: ClosedWindow, result: dict[str, Any]) -> None:
        ref = self.reference
        try:
            path = write_report(
                self.reports_dir,
                window=window,
                result=result,
                reference=ref.rows,
                reference_probabilities=self.output_reference,
                feature_names=ref.feature_names,
                title=f"{ref.model} version {ref.version}",
            )
        except (OSError, ValueError) as e:
            _log.warning("window %d: the drift report could not be written: %s", window.index, e)
            return
        result["report"] = f"{self.public_url}/v1/drift/reports/{path.name}"
        entry = {k: result[k] for k in ("window", "start", "end", "rows", "drifted_features", "report")}
        self.reports.append({**entry, "file": path.name})

    def event(self, result: dict[str, Any]) -> DriftEvent:
        """The ``org.kfkit.drift.data`` event of a drifted window."""
        ref = self.reference
        event_id = f"{ref.model}-{ref.version}-w{result['window']}-data"
        result["event_id"] = event_id
        data = dict(result["result"]["data"])
        data["is_drift"] = int(result["is_drift"])
        body = {
            "meta": result["result"]["meta"],
            "data": data,
            "kfkit": {
                "model": ref.model,
                "version": ref.version,
                "window": result["window"],
                "rows": result["rows"],
                "start": result["start"],
                "end": result["end"],
                "drifted_features": result["drifted_features"],
                "report": result["report"],
                "metrics": self._performance(),
                "detector": result["detector"],
                "feature_drift": result["feature_drift"],
                "output": result["output"],
            },
        }
        return DriftEvent(event_id, DATA_EVENT, ref.model, ref.version, body, iso_time(time.time()))
