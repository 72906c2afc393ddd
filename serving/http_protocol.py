"""uvicorn HTTP protocols that answer a request which is not valid HTTP with kfkit's JSON 4xx, not plain text.

uvicorn answers bytes its parser rejects (a garbage request line, a bad header, broken chunked encoding, an
invalid Content-Length) with a plain-text ``400 Invalid HTTP request received.`` that hides what was wrong.
These subclasses answer ``{"error": "malformed HTTP request: <the parser's reason>; <the fix>"}`` instead,
reject HTTP/0.9 request lines and request heads over :data:`MAX_HEAD_BYTES` (httptools sets no limit, so
a client could make the server buffer headers without end), and close gently: the answer goes out first,
then the server stops reading for a moment before it closes, so a client still sending the rest of a
broken request reads the answer instead of a connection reset.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without its [standard] extra; protocol_class() falls back to h11
    httptools = None
    HttpToolsProtocol = None

__all__ = ["MAX_HEAD_BYTES", "JsonH11Protocol", "JsonHttpToolsProtocol", "error_body", "protocol_class"]

MAX_HEAD_BYTES = 65_536
"""Largest request line plus headers accepted (431 above it); Envoy, in front of KServe in a cluster, allows 60 KiB."""
_LINGER_S = 1.0  # how long a rejected connection keeps reading (and dropping) what the client still sends
_FIX = "send a valid HTTP/1.1 request (request line, headers, Content-Length or chunked body)"

OnRejected = Callable[[int], None]
"""Called with the status of each answer to a malformed request (e.g. to count it in the server's metrics)."""


def error_body(status: int, reason: str, *, max_head_bytes: int = MAX_HEAD_BYTES) -> bytes:
    """The JSON body answering a malformed request: what the parser said, and what to send instead."""
    if status == 431:
        message = (
            f"request line and headers exceed {max_head_bytes} bytes ({reason}); send smaller headers "
            "(data belongs in the body)"
        )
    else:
        message = f"malformed HTTP request: {reason}; {_FIX}"
    return json.dumps({"error": message}).encode()


def protocol_class(*, on_rejected: OnRejected | None = None, use_h11: bool = False) -> type[asyncio.Protocol]:
    """The protocol class for ``uvicorn.Config(http=...)``.

    httptools-based when httptools is installed (uvicorn's own choice for ``http="auto"``), else h11.

    Args:
        on_rejected: called with the status of every malformed request answered.
        use_h11: use the h11 parser even when httptools is installed.
    """
    base = JsonH11Protocol if use_h11 or JsonHttpToolsProtocol is None else JsonHttpToolsProtocol
    if on_rejected is None:
        return base
    return type(base.__name__, (base,), {"on_rejected": staticmethod(on_rejected)})


def _parser_reason() -> tuple[int, str]:
    """Status and reason for the parser error being handled.

    uvicorn calls ``send_400_response`` from its ``except`` clause and passes only a fixed message.
    """
    exc = sys.exc_info()[1]
    if exc is None:
        return 400, "the request could not be parsed"
    # httptools reports an error raised in one of uvicorn's callbacks as a generic "callback error"; the
    # error it wraps says what was wrong with the request.
    if httptools is not None and isinstance(exc, httptools.HttpParserCallbackError) and exc.__context__ is not None:
        exc = exc.__context__
    hint = getattr(exc, "error_status_hint", 400)  # h11's: 431 for an over-long head, 501 for a coding
    status = hint if 400 <= hint < 500 else 400
    return status, (str(exc) or type(exc).__name__).rstrip(".")


class _JsonRejection:
    """The answer to a malformed request, shared by both parsers' protocols."""

    on_rejected: OnRejected | None = None
    max_head_bytes = MAX_HEAD_BYTES
    _linger: asyncio.TimerHandle | None = None
    _rejected = False

    def _reject(self, status: int, reason: str) -> None:
        """Write the JSON answer, then half-close and drop further input.

        The connection closes when the client closes it or after :data:`_LINGER_S`: closing with unread
        input would reset the connection, and a reset can destroy the answer before the client reads it.
        """
        body = error_body(status, reason, max_head_bytes=self.max_head_bytes)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        head += [b"%s: %s\r\n" % (name, value) for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self._rejected = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # A request already handed to the app (its body broke, or it was pipelined before the bad one)
            # is abandoned as if the client had gone: the app's receive() gets http.disconnect, its send()
            # becomes a no-op instead of writing after the half-close.
            cycle.disconnected = True
            cycle.message_event.set()
        if self.on_rejected is not None:
            self.on_rejected(status)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self._linger = self.loop.call_later(_LINGER_S, self.transport.close)
        else:  # TLS cannot half-close
            self.transport.close()

    def _stop_lingering(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None


if HttpToolsProtocol is not None:

    class JsonHttpToolsProtocol(_JsonRejection, HttpToolsProtocol):
        """uvicorn's httptools protocol with JSON rejections, no HTTP/0.9 and a bounded request head."""

        # The head is bounded by counting reads, not header fields: per-field hooks would cost every request.
        # An unfinished head is rejected once the reads after the one it began in pass MAX_HEAD_BYTES (that
        # first read may also hold the previous request's tail, so it is not counted: a pipelined request is
        # never rejected for it). A finished head is measured exactly when the reads it spans could hold more.
        _head_reads: int | None = None  # bytes read since the current head's first read; None between heads
        _head_first_read = 0  # length of the read the current head began in
        _head_began = False  # a head began in the read being parsed
        _read_len = 0  # length of the read being parsed

        def send_400_response(self, msg: str) -> None:  # noqa: ARG002 (uvicorn's fixed text)
            """Answer the parser error being handled with a JSON 4xx."""
            self._reject(*_parser_reason())

        def data_received(self, data: bytes) -> None:
            """Parse as uvicorn does, dropping input after a rejection and bounding the request head."""
            if self._rejected:
                return
            self._head_began = False
            self._read_len = len(data)
            super().data_received(data)
            if self._head_reads is None or self._head_began or self._rejected or self.transport.is_closing():
                return
            self._head_reads += len(data)
            if self._head_reads > MAX_HEAD_BYTES:
                self.logger.warning("Request head over %d bytes.", MAX_HEAD_BYTES)
                self._reject(431, f"{self._head_reads}+ bytes read without the end of the headers")

        def on_message_begin(self) -> None:  # noqa: D102 (parser callback)
            self._head_reads = 0
            self._head_first_read = self._read_len
            self._head_began = True
            super().on_message_begin()

        def on_headers_complete(self) -> None:  # noqa: D102 (parser callback)
            spanned = self._read_len if self._head_began else self._head_first_read + self._head_reads + self._read_len
            self._head_reads = None
            if spanned > MAX_HEAD_BYTES:  # rare: large reads (a big body) or a large head
                size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
                if size > MAX_HEAD_BYTES:
                    error = httptools.HttpParserError(f"{size} bytes of URL and header fields")
                    error.error_status_hint = 431  # read by _parser_reason, as h11's own errors carry it
                    raise error
            if self.parser.get_http_version() == "0.9":
                # llhttp takes "GET /" as HTTP/0.9, which uvicorn would answer in HTTP/1.1 all the same.
                raise httptools.HttpParserError("request line has no HTTP version (HTTP/0.9 is not supported)")
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102 (asyncio callback)
            self._stop_lingering()
            super().connection_lost(exc)

else:  # pragma: no cover
    JsonHttpToolsProtocol = None


class JsonH11Protocol(_JsonRejection, H11Protocol):
    """uvicorn's h11 protocol with JSON rejections (h11 itself bounds the head and refuses HTTP/0.9)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Set up as uvicorn does, with h11's head limit raised from 16 KiB to kfkit's unless configured."""
        super().__init__(*args, **kwargs)
        if self.config.h11_max_incomplete_event_size is None:
            self.conn = h11.Connection(h11.SERVER, MAX_HEAD_BYTES)
        else:
            self.max_head_bytes = self.config.h11_max_incomplete_event_size

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002 (uvicorn's fixed text)
        """Answer the parser error being handled with a JSON 4xx."""
        self._reject(*_parser_reason())

    def data_received(self, data: bytes) -> None:  # noqa: D102 (asyncio callback)
        if not self._rejected:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102 (asyncio callback)
        self._stop_lingering()
        super().connection_lost(exc)
