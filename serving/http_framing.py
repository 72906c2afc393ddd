"""The HTTP framing of an inference request: its Content-Length, the body limit, and reading the body (ASGI).

Malformed HTTP itself (a bad request line, broken chunking) never reaches here: uvicorn's parser rejects
it first (:mod:`kfkit.serving.http_protocol`). These checks answer what a well-framed request can still
get wrong, with a :class:`~kfkit.errors.InvalidInput` carrying its HTTP status (400, 413).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from kfkit.errors import InvalidInput

__all__ = ["Receive", "check_body_size", "parse_content_length", "read_body"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
"""An ASGI ``receive`` callable."""


def check_body_size(size: int, limit: int) -> None:
    """Refuse a body over ``limit`` bytes with 413.

    Raises:
        InvalidInput: with status 413.
    """
    if size > limit:
        raise InvalidInput(
            f"request body of {size} bytes is over this server's limit of {limit} bytes; send fewer rows per "
            "request (or raise serving.max_body_bytes / --max-body-bytes)",
            status_code=413,
        )


def parse_content_length(value: str | None) -> int | None:
    """The Content-Length header as an int (None when absent).

    Raises:
        InvalidInput: the header is not a non-negative integer.
    """
    if value is None:
        return None
    if not value.isdigit() or not value.isascii():
        raise InvalidInput(f"header content-length: {value!r} is not a non-negative integer")
    return int(value)


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes | None:
    """The whole request body, refused with 413 as soon as it is known to be over ``limit`` bytes.

    A declared Content-Length over the limit is refused before a byte is read; a chunked body (no length up
    front) as soon as what arrived passes the limit.

    Returns:
        The body, or None when the client went away before it arrived (there is no one to answer).

    Raises:
        InvalidInput: a bad Content-Length (400) or a body over the limit (413).
    """
    length = parse_content_length(headers.get("content-length"))
    if length is not None:
        check_body_size(length, limit)
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body = message.get("body", b"")
    if not message.get("more_body", False):
        check_body_size(len(body), limit)
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        check_body_size(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
