"""Drift events out: binary-mode CloudEvents POSTed to ``$K_SINK`` (or ``--sink``) by a sender thread.

Delivery follows Knative's rules from the other side: 5xx, 429 and connection failures are retried with
backoff, another 4xx is final (the receiver refused the event itself). The queue is bounded; an event
that finds it full is dropped and counted. No sink: events are only kept in ``GET /v1/drift/windows``.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kfkit.serving.drift.background import drain_and_stop

if TYPE_CHECKING:
    from kfkit.serving.drift.metrics import Metrics

__all__ = ["DATA_EVENT", "PERFORMANCE_EVENT", "DriftEvent", "EventSender"]

DATA_EVENT = "org.kfkit.drift.data"
PERFORMANCE_EVENT = "org.kfkit.drift.performance"
_log = logging.getLogger("kfkit.serving.drift")


@dataclass(slots=True)
class DriftEvent:
    """One drift CloudEvent (docs/drift.md, "Drift event")."""

    id: str
    """``ce-id``: ``<model>-<version>-w<window>-data`` or ``<model>-<version>-p<n>-performance``."""
    type: str
    """:data:`DATA_EVENT` or :data:`PERFORMANCE_EVENT`."""
    model: str
    version: str
    body: dict[str, Any]
    """``{meta, data, kfkit}``."""
    time: str
    """``ce-time``, RFC 3339."""

    def headers(self) -> dict[str, str]:
        """Binary-mode CloudEvent headers."""
        return {
            "ce-specversion": "1.0",
            "ce-id": self.id,
            "ce-source": f"kfkit-drift/{self.model}",
            "ce-type": self.type,
            "ce-subject": f"{self.model}/{self.version}",
            "ce-time": self.time,
            "content-type": "application/json",
        }


class EventSender:
    """A daemon thread that delivers queued events to one URL, retrying what Knative would retry."""

    def __init__(
        self,
        url: str | None,
        metrics: Metrics,
        *,
        queue_size: int = 1000,
        timeout_s: float = 5.0,
        attempts: int = 6,
        backoff_s: float = 0.5,
    ) -> None:
        """Deliver to ``url`` (None: count events as not sent, deliver nothing)."""
        self.url, self._metrics = url, metrics
        self._timeout_s, self._attempts, self._backoff_s = timeout_s, attempts, backoff_s
        self._queue: queue.Queue[DriftEvent | None] = queue.Queue(maxsize=queue_size)
        self.sent: list[dict[str, Any]] = []
        """The last deliveries (id, type, status), newest last, for status pages and tests."""
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the sender thread (once)."""
        if self.url and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kfkit-drift-sink", daemon=True)
            self._thread.start()

    def send(self, event: DriftEvent) -> None:
        """Queue an event; never blocks."""
        if not self.url:
            self._metrics.inc("kfkit_drift_sink_events_total", event.type, "no_sink")
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._metrics.inc("kfkit_drift_sink_events_total", event.type, "dropped")
            _log.warning("drift event %s dropped: the sink queue is full (%s is slow or down)", event.id, self.url)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop the thread."""
        if self._thread is None:
            return
        drain_and_stop(self._queue, self._thread, timeout_s)
        self._thread = None

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                if event is None:
                    return
                status = self._deliver(event)
                outcome = "sent" if 200 <= status < 300 else "failed"
                self._metrics.inc("kfkit_drift_sink_events_total", event.type, outcome)
                self.sent = [*self.sent[-99:], {"id": event.id, "type": event.type, "status": status}]
            finally:
                self._queue.task_done()

    def _deliver(self, event: DriftEvent) -> int:
        """POST with retries; the last HTTP status (0: never reached)."""
        data = json.dumps(event.body, separators=(",", ":")).encode()
        status = 0
        for attempt in range(self._attempts):
            request = urllib.request.Request(self.url, data=data, headers=event.headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                    response.read()
                    return response.status
            except urllib.error.HTTPError as e:
                status = e.code
                if status < 500 and status != 429:
                    _log.warning("sink %s refused drift event %s: %s %s", self.url, event.id, status, e.reason)
                    return status
            except (urllib.error.URLError, OSError, ValueError) as e:
                status = 0
                _log.debug("sink %s: %s", self.url, e)
            time.sleep(min(self._backoff_s * 2**attempt, 30.0))
        _log.warning("drift event %s not delivered to %s after %d attempts", event.id, self.url, self._attempts)
        return status
