"""Payload logging: each request/response pair goes out as two CloudEvents in KServe's logger format.

The events are binary-mode CloudEvents 1.0, as KServe's agent sends them: ``ce-type``
``org.kubeflow.serving.inference.request`` or ``.response``, one ``ce-id`` shared by the pair (the
request's ``ce-id`` or ``x-request-id`` header when it has one), ``ce-source``, ``ce-time``, the
extensions ``ce-inferenceservicename``, ``ce-namespace``, ``ce-component``, ``ce-endpoint`` and
``ce-metadata``, plus kfkit's ``ce-modelversion``; the body is the request or response JSON.

:meth:`PayloadLogger.log` never waits: pairs go into a bounded queue that a few sender tasks drain, and
when the receiver is slow or gone the queue fills and new pairs are dropped and counted, so logging never
slows a prediction down.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

    from kfkit.serving.metrics import ServerMetrics

__all__ = ["PayloadLogger", "REQUEST_EVENT", "RESPONSE_EVENT"]

REQUEST_EVENT = "org.kubeflow.serving.inference.request"
RESPONSE_EVENT = "org.kubeflow.serving.inference.response"

_log = logging.getLogger("kfkit.serving.payload")
_WARN_EVERY_S = 10.0
Body = bytes | Callable[[], bytes]
"""An event body, or a function that builds it (run by a sender, off the request path)."""


@dataclass(slots=True)
class _Pair:
    event_id: str
    content_type: str
    request: Body
    response: Body
    logged_at: float


class PayloadLogger:
    """Sends request/response CloudEvents to one URL through a bounded, dropping queue."""

    def __init__(
        self,
        url: str,
        *,
        model_name: str,
        model_version: str = "",
        queue_size: int = 1000,
        source: str = "",
        namespace: str | None = None,
        component: str = "predictor",
        endpoint: str = "default",
        metrics: ServerMetrics | None = None,
        timeout_s: float = 5.0,
        senders: int = 2,
    ) -> None:
        """Configure the logger; the senders start with the first event, on the running event loop.

        Args:
            url: Receiver of the events (an HTTP(S) URL: a Knative broker, a drift detector, a message dumper).
            model_name: Sent as ``ce-inferenceservicename``.
            model_version: Sent as ``ce-modelversion``.
            queue_size: Events (two per request) buffered before new pairs are dropped and counted.
            source: ``ce-source`` (this server's URL).
            namespace: ``ce-namespace``; default: the ``POD_NAMESPACE`` environment variable, or empty.
            component: ``ce-component`` (predictor, transformer).
            endpoint: ``ce-endpoint`` (default or canary).
            metrics: Where sent, failed and dropped events are counted.
            timeout_s: Longest one delivery may take before it counts as failed.
            senders: Deliveries in flight at once.
        """
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"payload log URL {url!r} must start with http:// or https://")
        self.url = url
        self._capacity = max(1, queue_size // 2)  # pairs
        self._static_headers = {
            "ce-specversion": "1.0",
            "ce-source": source or "kfkit-model-server",
            "ce-inferenceservicename": model_name,
            "ce-namespace": os.environ.get("POD_NAMESPACE", "") if namespace is None else namespace,
            "ce-component": component,
            "ce-endpoint": endpoint,
            "ce-metadata": "{}",
            "ce-modelversion": model_version,
        }
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._n_senders = senders
        self.sent = 0
        """Events the receiver accepted (2xx)."""
        self.failed = 0
        """Events the receiver refused, or that could not be delivered in time."""
        self.dropped = 0
        """Events never sent because the queue was full."""
        self._queue: asyncio.Queue[_Pair] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None
        self._next_warning = 0.0

    def log(self, *, event_id: str, content_type: str, request: Body, response: Body) -> bool:
        """Queue one request/response pair; never blocks. Call from the event loop.

        Args:
            event_id: ``ce-id`` of both events.
            content_type: Content type of both bodies (the request's, as KServe sends it).
            request: The request body, or a function that builds it.
            response: The response body, or a function that builds it.

        Returns:
            True if queued, False if dropped because the queue is full.
        """
        queue = self._queue
        if queue is None or self._loop is not asyncio.get_running_loop():
            queue = self._start()
        if queue.qsize() >= self._capacity:
            self._count("dropped", 2)
            return False
        queue.put_nowait(_Pair(event_id, content_type, request, response, time.time()))
        return True

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait until every queued pair was delivered (or failed); True if the queue emptied in time."""
        if self._queue is None:
            return True
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stop the senders (queued events are dropped) and close the HTTP session."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._queue = None
        self._loop = None

    def _start(self) -> asyncio.Queue[_Pair]:
        """Create the queue and senders on the running loop (again, if an earlier loop ended)."""
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue()
        self._session = None
        self._tasks = [
            self._loop.create_task(self._send_forever(), name=f"kfkit-payload-sender-{i}")
            for i in range(self._n_senders)
        ]
        return self._queue

    async def _send_forever(self) -> None:
        queue = self._queue
        while True:
            pair = await queue.get()
            try:
                when = datetime.datetime.fromtimestamp(pair.logged_at, datetime.UTC).isoformat()
                for ce_type, body in ((REQUEST_EVENT, pair.request), (RESPONSE_EVENT, pair.response)):
                    await self._send(pair, ce_type, when, body)
            finally:
                queue.task_done()

    async def _send(self, pair: _Pair, ce_type: str, when: str, body: Body) -> None:
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(limit=self._n_senders),
            )
        headers = {
            **self._static_headers,
            "ce-id": pair.event_id,
            "ce-type": ce_type,
            "ce-time": when,
            "content-type": pair.content_type,
        }
        try:
            data = body() if callable(body) else body
            async with self._session.post(self.url, data=data, headers=headers) as response:
                await response.read()
                ok = 200 <= response.status < 300
                if not ok:
                    self._warn(f"payload log {self.url} answered {response.status} for event {pair.event_id}")
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
            ok = False
            self._warn(f"payload log {self.url}: event {pair.event_id} not delivered: {e or type(e).__name__}")
        self._count("sent" if ok else "failed", 1)

    def _warn(self, message: str) -> None:
        """Log a delivery problem at most every few seconds (a dead receiver fails every event)."""
        now = time.monotonic()
        if now >= self._next_warning:
            self._next_warning = now + _WARN_EVERY_S
            _log.warning("%s (failed so far: %d, dropped: %d)", message, self.failed + 1, self.dropped)

    def _count(self, outcome: str, n: int) -> None:
        setattr(self, outcome, getattr(self, outcome) + n)
        if self._metrics is not None:
            self._metrics.payload(outcome, n)
