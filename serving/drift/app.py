"""The detector's HTTP front: a plain ASGI app (no framework on the hot path), routes as docs/drift.md lists.

``POST /`` and ``POST /v1/events`` take payload CloudEvents (202 accepted, 200 for a duplicate);
``POST /v1/feedback`` takes labels; ``GET /v1/drift/windows``, ``/v1/drift/reports[/<file>]``,
``/v1/drift/status``, ``/metrics``, ``/v2/health/live`` and ``/v2/health/ready`` read. Every refusal is a
4xx with a JSON ``{"error": message}`` (413 over the body limit, 415 for a body that is not JSON): Knative
retries a 5xx for ever, so a malformed event must never get one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from kfkit.errors import InvalidInput, KfkitError
from kfkit.serving.drift.decoding import loads
from kfkit.serving.drift.service import DriftService

__all__ = ["DriftApp"]

_log = logging.getLogger("kfkit.serving.drift")
_JSON = [(b"content-type", b"application/json")]
_HTML = [(b"content-type", b"text/html; charset=utf-8")]
_TEXT = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
_ACCEPTED = json.dumps({"accepted": True}).encode()
_DUPLICATE = json.dumps({"accepted": False, "duplicate": True}).encode()
_GET_ROUTES = ("/v1/drift/windows", "/v1/drift/reports", "/v1/drift/status", "/metrics", "/v2/health/live",
               "/v2/health/ready")  # fmt: skip
_DRAIN_BYTES = 256 << 20
"""Most of an oversized body read (and dropped) before answering 413."""
# A bug in decoding an odd body must still answer 4xx; these are what such a bug raises.
_MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError)


class DriftApp:
    """ASGI application around one :class:`DriftService`."""

    def __init__(self, service: DriftService, *, max_body_bytes: int = 8 << 20, tick_s: float = 1.0) -> None:
        """Serve ``service``; bodies over ``max_body_bytes`` get 413 unread."""
        self.service, self.max_body_bytes, self.tick_s = service, max_body_bytes, tick_s
        self._ticker: asyncio.Task | None = None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """ASGI entry point."""
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return None
        method, path = scope["method"], scope["path"]
        try:
            if method == "POST" and path in ("/", "/v1/events", "/v1/feedback"):
                return await self._post(path, scope, receive, send)
            if method == "GET":
                return await self._get(path, scope, send)
            known = path in ("/", "/v1/events", "/v1/feedback", *_GET_ROUTES) or path.startswith("/v1/drift/reports/")
            if known:
                return await _error(send, 405, f"{method} is not allowed on {path}")
            return await _error(send, 404, f"no route {path}; see docs/drift.md for the detector's endpoints")
        except KfkitError as e:
            return await _error(send, e.status_code, str(e))

    async def _post(self, path: str, scope: dict, receive: Any, send: Any) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        body = await self._body(headers, receive, send)
        if body is None:
            return
        service = self.service
        if path == "/v1/feedback":
            kind = headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return await _error(send, 415, f"feedback must be application/json, not {kind!r:.60}")
            try:
                answer = service.feedback_labels(loads(body, "feedback body"))
            except InvalidInput as e:
                return await _error(send, e.status_code, str(e))
            return await _respond(send, 200, _JSON, json.dumps(answer).encode())
        try:
            accepted = service.ingest(headers, body)
        except InvalidInput as e:
            return await self._reject(send, e.status_code, str(e))
        except _MALFORMED as e:
            return await self._reject(send, 400, f"malformed event ({type(e).__name__}: {e!s:.200})")
        if accepted.duplicate:
            return await _respond(send, 200, _JSON, _DUPLICATE)
        return await _respond(send, 202, _JSON, _ACCEPTED)

    async def _reject(self, send: Any, status: int, message: str) -> None:
        self.service.metrics.inc("kfkit_drift_rejected_total", str(status))
        await _error(send, status, message)

    async def _body(self, headers: dict[str, str], receive: Any, send: Any) -> bytes | None:
        """The whole body, or None after answering 413 (over the limit) or when the client left.

        A body over the limit is read to its end and dropped before the 413 goes out (up to a bound), so
        the sender reads the answer instead of a connection reset in mid-upload.
        """
        limit = self.max_body_bytes
        declared = headers.get("content-length", "")
        over = declared.isdigit() and int(declared) > limit
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            over = over or size > limit
            if not over:
                chunks.append(chunk)
            if not message.get("more_body") or (over and size > _DRAIN_BYTES):
                break
        if over:
            chunks.clear()
            await self._reject(send, 413, f"body of {declared or size} bytes is over the detector's limit of {limit}")
            return None
        return b"".join(chunks) if len(chunks) != 1 else chunks[0]

    async def _get(self, path: str, scope: dict, send: Any) -> None:
        service = self.service
        if path == "/v2/health/live":
            return await _respond(send, 200, _JSON, b'{"live": true}')
        if path == "/v2/health/ready":
            ready = service.ready
            return await _respond(send, 200 if ready else 503, _JSON, json.dumps({"ready": ready}).encode())
        if path == "/metrics":
            return await _respond(send, 200, _TEXT, service.metrics.render())
        if path == "/v1/drift/status":
            return await _respond(send, 200, _JSON, _dumps(service.status()))
        if path == "/v1/drift/windows":
            limit = _limit(scope)
            return await _respond(send, 200, _JSON, _dumps({"windows": service.windows(limit)}))
        if path == "/v1/drift/reports":
            return await _respond(send, 200, _JSON, _dumps({"reports": service.reports()}))
        if path.startswith("/v1/drift/reports/"):
            file = service.report_path(path.rsplit("/", 1)[1])
            if file is None:
                return await _error(send, 404, f"no report {path}; GET /v1/drift/reports lists them")
            return await _respond(send, 200, _HTML, file.read_bytes())
        return await _error(send, 404, f"no route {path}; see docs/drift.md for the detector's endpoints")

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.service.start()
                except (OSError, KfkitError) as e:
                    await send({"type": "lifespan.startup.failed", "message": str(e)})
                    return
                self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._ticker is not None:
                    self._ticker.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._ticker
                await asyncio.get_running_loop().run_in_executor(None, self.service.stop)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.service.tick()
            except Exception:  # the ticker must outlive any one failure
                _log.exception("closing a timed-out window failed")


def _limit(scope: dict) -> int:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("limit", ["50"])
    if not values[0].isdigit():
        raise InvalidInput(f"limit={values[0]!r:.40} must be a whole number (0 = all)")
    return int(values[0])


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=_default).encode()


def _default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


async def _error(send: Any, status: int, message: str) -> None:
    await _respond(send, status, _JSON, json.dumps({"error": message}).encode())


async def _respond(send: Any, status: int, headers: list, body: bytes) -> None:
    await send(
        {"type": "http.response.start", "status": status,
         "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    )  # fmt: skip
    await send({"type": "http.response.body", "body": body})
