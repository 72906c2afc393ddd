"""The drift service: one model version's detector, its ingestion, labels, worker, sink and state, together.

:meth:`DriftService.from_uri` builds everything from a registry version (the detectors are fitted before
the service reports ready); the HTTP front (:mod:`kfkit.serving.drift.app`) calls :meth:`ingest`,
:meth:`feedback`, :meth:`tick` and the read-only views from its event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kfkit.serving.drift.detectors import ALIBI_VERSION
from kfkit.serving.drift.feedback import Feedback, parse_feedback, rolling_metrics
from kfkit.serving.drift.ingest import Accepted, Ingestor
from kfkit.serving.drift.metrics import Metrics
from kfkit.serving.drift.reference import Reference, load_reference
from kfkit.serving.drift.settings import DriftSettings
from kfkit.serving.drift.sink import PERFORMANCE_EVENT, DriftEvent, EventSender
from kfkit.serving.drift.state import load_state, save_state
from kfkit.serving.drift.windows import WindowBuffer
from kfkit.serving.drift.worker import TestWorker, iso_time

__all__ = ["DriftService"]

_log = logging.getLogger("kfkit.serving.drift")
_REPORT_FILE = re.compile(r"w[0-9]{1,12}\.html")
_SAVED_KEYS = 20_000
"""Dedupe keys and pending predictions saved at shutdown (the newest)."""


class DriftService:
    """Everything one detector process holds."""

    def __init__(
        self,
        reference: Reference,
        settings: DriftSettings,
        *,
        sink: str | None = None,
        state_dir: str | Path | None = None,
        public_url: str = "http://127.0.0.1:8090",
        dedupe_capacity: int = 100_000,
        backlog: int = 8,
    ) -> None:
        """Fit the detectors and set up ingestion (call :meth:`start` before serving)."""
        self.reference, self.settings = reference, settings
        self.state_dir = Path(state_dir) if state_dir else None
        self.metrics = Metrics()
        self.feedback = Feedback(settings, reference.threshold, capacity=dedupe_capacity)
        self.window = WindowBuffer(
            len(reference.feature_names),
            size=settings.window_size,
            seconds=settings.window_seconds,
            min_rows=settings.min_window_rows,
            overlap=settings.overlap,
        )
        warmup = settings.reference_rows if settings.output_drift and reference.probabilities is None else 0
        self.ingestor = Ingestor(
            reference.feature_names, self.window, self.feedback, self.metrics,
            dedupe_capacity=dedupe_capacity, warmup_rows=warmup,
        )  # fmt: skip
        self.sink = sink
        self.sender = EventSender(sink, self.metrics)
        reports = self.state_dir / "reports" if self.state_dir else Path(tempfile.mkdtemp(prefix="kfkit-drift-"))
        self.worker = TestWorker(
            reference, settings, self.metrics, self.sender,
            reports_dir=reports, public_url=public_url, performance=self._performance, backlog=backlog,
        )  # fmt: skip
        self.performance_events = 0
        self.ready = False
        self.started_at = time.time()
        self.metrics.set("kfkit_drift_window_size", settings.window_size)
        for metric, floor in settings.performance_floors.items():
            self.metrics.set("kfkit_drift_performance_floor", floor, metric)

    @classmethod
    def from_uri(
        cls, model_uri: str, *, overrides: dict[str, Any] | None = None, sink: str | None = None, **options: Any
    ) -> DriftService:
        """Build from a registry version: its reference and drift settings, with ``overrides`` on top.

        The sink is ``sink``, else the version's ``drift.sink``, else ``$K_SINK``; None sends no events.

        Raises:
            RegistryError: the version is missing, unverifiable or lacks its reference data.
            ConfigError: the settings are invalid.
        """
        reference = load_reference(model_uri, cache_dir=options.pop("cache_dir", None))
        settings = reference.settings.replace(**(overrides or {}))
        sink = sink or settings.sink or os.environ.get("K_SINK") or None
        return cls(reference, settings, sink=sink, **options)

    # Life cycle.
    def start(self) -> None:
        """Restore the saved state, start the worker and sender threads, report ready."""
        self._restore()
        self.worker.start()
        self.sender.start()
        self.ready = True
        self.metrics.set("kfkit_drift_ready", 1)

    def stop(self, drain_s: float = 30.0) -> None:
        """Test the queued windows (up to ``drain_s``), save the open window and state, flush events."""
        self.ready = False
        self.metrics.set("kfkit_drift_ready", 0)
        self.worker.stop(drain_s)
        self.sender.close()
        self._save()

    # The request path (event loop).
    def ingest(self, headers: dict[str, str], body: bytes) -> Accepted:
        """One payload CloudEvent (see :meth:`Ingestor.ingest`); closed windows go to the worker."""
        accepted = self.ingestor.ingest(headers, body, time.time())
        for window in accepted.closed:
            self.worker.submit(window)
        if self.ingestor.warmup_rows and (probabilities := self.ingestor.take_warmup()) is not None:
            self.worker.set_output_reference(probabilities)
        self.metrics.set("kfkit_drift_window_fill", self.window.n)
        return accepted

    def tick(self) -> None:
        """Close the open window if its time is up (the front calls this every second)."""
        window = self.window.tick(time.time())
        if window is not None:
            self.worker.submit(window)
            self.metrics.set("kfkit_drift_window_fill", self.window.n)

    def feedback_labels(self, payload: Any) -> dict[str, Any]:
        """``POST /v1/feedback``: join labels, update the rolling metrics, raise a performance event if due."""
        answer = self.feedback.add(parse_feedback(payload), time.time())
        for outcome in ("joined", "unknown", "duplicate"):
            if answer[outcome]:
                self.metrics.inc("kfkit_drift_labels_total", outcome, by=answer[outcome])
        for metric, value in answer["metrics"].items():
            self.metrics.set("kfkit_drift_performance", value, metric)
        below = self.feedback.breach()
        answer["below_floors"] = self.feedback.below
        if below:
            answer["event_id"] = self._performance_event(below).id
        return answer

    def _performance_event(self, below: list[str]) -> DriftEvent:
        ref = self.reference
        self.performance_events += 1
        start, end = self.feedback.span()
        event_id = f"{ref.model}-{ref.version}-p{self.performance_events}-performance"
        body = {
            "meta": {"name": "RollingPerformance", "detector_type": "performance", "data_type": "tabular",
                     "version": ALIBI_VERSION},
            "data": {"is_drift": 1, "p_val": None, "threshold": None, "distance": None},
            "kfkit": {
                "model": ref.model, "version": ref.version, "window": self.window.index,
                "rows": len(self.feedback.labelled), "start": iso_time(start), "end": iso_time(end),
                "drifted_features": [], "report": None, "metrics": self.feedback.metrics,
                "floors": self.settings.performance_floors, "below_floors": below,
                "threshold": ref.threshold,
            },
        }  # fmt: skip
        event = DriftEvent(event_id, PERFORMANCE_EVENT, ref.model, ref.version, body, iso_time(time.time()))
        _log.warning("%s: rolling %s below the floor(s) %s", event_id, below, self.settings.performance_floors)
        self.sender.send(event)
        return event

    def _performance(self) -> dict[str, Any]:
        return dict(self.feedback.metrics)

    # Read-only views.
    def windows(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest results, newest last."""
        results = list(self.worker.results)
        return results[-limit:] if limit else results

    def reports(self) -> list[dict[str, Any]]:
        """Every report written, oldest first."""
        return list(self.worker.reports)

    def report_path(self, name: str) -> Path | None:
        """The file of a report named ``w<index>.html``; None for any other name (no path tricks)."""
        if not _REPORT_FILE.fullmatch(name):
            return None
        path = self.worker.reports_dir / name
        return path if path.is_file() else None

    def status(self) -> dict[str, Any]:
        """``GET /v1/drift/status``: what the detector is and where it stands."""
        m, ref = self.metrics, self.reference
        last = self.worker.results[-1] if self.worker.results else None
        return {
            "model": ref.model,
            "version": ref.version,
            "model_uri": ref.uri,
            "ready": self.ready,
            "detector": self.settings.detector,
            "settings": dataclasses.asdict(self.settings),
            "features": len(ref.feature_names),
            "reference_rows": int(ref.rows.shape[0]),
            "output_reference": self._output_reference(),
            "window": {"index": self.window.index, "fill": self.window.n, "size": self.window.size,
                       "opened_at": iso_time(self.window.opened_at) if self.window.opened_at else None},
            "backlog": self.worker.queue.qsize(),
            "events": {
                outcome: int(sum(m.get("kfkit_drift_events_total", kind, outcome) for kind in ("request", "response")))
                for outcome in ("accepted", "duplicate")
            } | {"rejected": self.rejected()},
            "windows": {o: int(m.get("kfkit_drift_windows_total", o)) for o in ("tested", "drift", "dropped")},
            "last_window": None if last is None else {k: last[k] for k in
                                                      ("window", "end", "rows", "is_drift", "drifted_features",
                                                       "report")},
            "performance": {"metrics": self.feedback.metrics, "labelled_rows": len(self.feedback.labelled),
                            "floors": self.settings.performance_floors, "below_floors": self.feedback.below,
                            "labels": self.feedback.counts},
            "sink": self.sink,
            "sink_deliveries": self.sender.sent[-10:],
            "reports": len(self.worker.reports),
        }  # fmt: skip

    def rejected(self) -> int:
        """Events refused so far (any 4xx)."""
        return int(self.metrics.total("kfkit_drift_rejected_total"))

    def _output_reference(self) -> dict[str, Any]:
        if not self.settings.output_drift:
            return {"source": "off"}
        if self.reference.probabilities is not None:
            return {"source": "published", "rows": int(self.reference.probabilities.size)}
        if self.worker.output_reference is not None:
            return {"source": "logged", "rows": int(self.worker.output_reference.size)}
        return {"source": "collecting", "rows": self.ingestor.warmup_count, "of": self.settings.reference_rows}

    # State.
    def _save(self) -> None:
        if self.state_dir is None:
            if self.window.n:
                _log.warning("no --state-dir: the open window's %d rows are not kept", self.window.n)
            return
        snapshot = self.window.snapshot()
        ingestor, feedback = self.ingestor, self.feedback
        state = {
            "model": self.reference.model,
            "version": self.reference.version,
            "saved_at": time.time(),
            "window": {"index": snapshot["index"], "opened_at": snapshot["opened_at"]},
            "seen": [list(k) for k in list(ingestor.seen)[-_SAVED_KEYS:]],
            "pending": list(ingestor.pending.items())[-_SAVED_KEYS:],
            "predictions": [[k, v.tolist()] for k, v in list(feedback.predictions.items())[-_SAVED_KEYS:]],
            "labelled": list(feedback.labelled),
            "performance_events": self.performance_events,
            "joined_at_last_event": feedback.joined_at_last_event,
            "label_counts": feedback.counts,
            "results": list(self.worker.results)[-200:],
            "reports": self.worker.reports,
            "warmup": [p.tolist() for p in ingestor.warmup] if ingestor.warmup_rows else None,
        }
        arrays = {
            "rows": snapshot["rows"],
            "times": snapshot["times"],
            "probabilities": snapshot["probabilities"],
            "output_reference": self.worker.output_reference if self.reference.probabilities is None else None,
        }
        save_state(self.state_dir, state, arrays)
        _log.info("state saved to %s (open window %d: %d rows)", self.state_dir, snapshot["index"], self.window.n)

    def _restore(self) -> None:
        if self.state_dir is None:
            return
        ref = self.reference
        width = len(ref.feature_names)
        state, arrays = load_state(self.state_dir, model=ref.model, version=ref.version, n_features=width)
        if not state:
            return
        window = state.get("window", {})
        empty = np.empty((0, len(ref.feature_names)), dtype=np.float32)
        self.window.restore(
            arrays.get("rows", empty), arrays.get("times", np.empty(0)), arrays.get("probabilities", np.empty(0)),
            int(window.get("index", 1)), window.get("opened_at"),
        )  # fmt: skip
        ingestor, feedback = self.ingestor, self.feedback
        ingestor.seen.update((tuple(k), None) for k in state.get("seen", []))
        ingestor.pending.update((k, int(v)) for k, v in state.get("pending", []))
        for key, values in state.get("predictions", []):
            feedback.remember(key, np.asarray(values, dtype=np.float32))
        labelled = state.get("labelled", [])
        feedback.labelled.extend((float(p), int(y)) for p, y in labelled)
        feedback.times.extend([float(state.get("saved_at", time.time()))] * len(labelled))
        feedback.counts.update(state.get("label_counts", {}))
        feedback.joined_at_last_event = state.get("joined_at_last_event")
        feedback.metrics = rolling_metrics(feedback.labelled, ref.threshold)
        self.performance_events = int(state.get("performance_events", 0))
        self.worker.results.extend(state.get("results", []))
        self.worker.reports.extend(state.get("reports", []))
        if arrays.get("output_reference") is not None and ref.probabilities is None:
            self.worker.set_output_reference(arrays["output_reference"])
            ingestor.warmup_rows = 0
        elif state.get("warmup") and ingestor.warmup_rows:
            ingestor.warmup = [np.asarray(p, dtype=np.float32) for p in state["warmup"]]
            ingestor.warmup_count = sum(p.size for p in ingestor.warmup)
        self.metrics.set("kfkit_drift_window_fill", self.window.n)
        _log.info("state restored from %s: window %d with %d rows", self.state_dir, self.window.index, self.window.n)
