"""The trigger's HTTP endpoint: drift CloudEvents in (``POST /``), ``GET /v1/retrain/status``, health.

A small threaded standard-library server: events arrive once per tested window, not per request, and this
keeps the trigger free of the serving stack. Every malformed request gets a 4xx with a JSON ``error``
(Knative does not retry a 4xx, and retries a 5xx forever); only a fault of the trigger itself is a 5xx.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kfkit.errors import InvalidInput
from kfkit.retrain.trigger import Trigger

__all__ = ["TriggerServer", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 1_048_576
"""Largest event body taken; a drift event is a few kilobytes."""
_EVENT_PATHS = ("/", "/v1/events")
_log = logging.getLogger("kfkit.retrain")


class TriggerServer:
    """Serves a :class:`Trigger` on ``host:port`` from a background thread (or the calling one)."""

    def __init__(self, trigger: Trigger, host: str = "127.0.0.1", port: int = 8091) -> None:
        """Bind now (port 0 picks a free one; see :attr:`url`).

        Raises:
            OSError: the port cannot be bound.
        """
        self.trigger = trigger
        self._httpd = ThreadingHTTPServer((host, port), _handler(trigger))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://host:port`` the server listens on."""
        host, port = self._httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in str(host) else host}:{port}"

    def start(self) -> TriggerServer:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="retrain-http", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until :meth:`shutdown` is called from another."""
        self._httpd.serve_forever()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _handler(trigger: Trigger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kfkit-retrain"

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path not in _EVENT_PATHS:
                self._error(404, f"no endpoint POST {path}; drift events go to POST / (or /v1/events)")
                return
            try:
                body = self._body()
                self._send(200, trigger.handle({k.lower(): v for k, v in self.headers.items()}, body))
            except InvalidInput as e:
                self._error(e.status_code, str(e))
            except Exception as e:
                _log.exception("drift event failed")
                self._error(500, f"the trigger could not record the event: {e}")

        def do_GET(self) -> None:  # noqa: N802
            path = self.path.split("?", 1)[0]
            if path == "/v1/retrain/status":
                self._send(200, trigger.status())
            elif path in ("/v2/health/live", "/v2/health/ready"):
                self._send(200, {"live": True} if path.endswith("live") else {"ready": True})
            else:
                self._error(404, f"no endpoint GET {path}; try /v1/retrain/status")

        def _refuse(self) -> None:
            self._error(405, f"{self.command} is not allowed; POST drift events to /, GET /v1/retrain/status")

        do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _refuse  # noqa: N815

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                return self._chunked()
            raw = self.headers.get("content-length")
            if raw is None:
                self.close_connection = True
                raise InvalidInput(
                    "Content-Length is missing; send the event with a Content-Length header", status_code=411
                )
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError
            except ValueError:
                self.close_connection = True
                raise InvalidInput(f"Content-Length {raw!r} is not a byte count") from None
            if length > MAX_BODY_BYTES:
                self.close_connection = True  # the body stays unread
                raise InvalidInput(
                    f"the event body is {length} bytes, over the limit of {MAX_BODY_BYTES}", status_code=413
                )
            body = self.rfile.read(length)
            if len(body) < length:
                self.close_connection = True
                raise InvalidInput(f"the body ended after {len(body)} of {length} bytes (Content-Length)")
            return body

        def _chunked(self) -> bytes:
            body = b""
            while True:
                line = self.rfile.readline(66)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise InvalidInput("malformed chunked body (a chunk size is not hexadecimal)") from None
                if size == 0:
                    while self.rfile.readline(8192).strip():  # trailers
                        pass
                    return body
                if len(body) + size > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise InvalidInput(f"the event body is over the limit of {MAX_BODY_BYTES} bytes", status_code=413)
                chunk = self.rfile.read(size)
                self.rfile.readline(3)
                if len(chunk) < size:
                    self.close_connection = True
                    raise InvalidInput("the chunked body ended early")
                body += chunk

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals (bad request line, unknown method, ...) as JSON 4xx, never 501/505."""
            self.close_connection = True
            if self.request_version == "HTTP/0.9":  # an unparsable request line: answer with a status line anyway
                self.request_version = "HTTP/1.0"
            code = {501: 405, 505: 400}.get(code, code)
            self._error(code, message or explain or f"malformed request ({code})")

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": message})

        def _send(self, status: int, document: Any) -> None:
            data = json.dumps(document, allow_nan=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            _log.debug("%s " + format, self.address_string(), *args)

    return Handler
