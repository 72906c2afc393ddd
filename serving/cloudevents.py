"""Recognise and validate an inference request that came as a CloudEvent, in binary or structured mode.

Shared by the model server and the drift service, so it imports nothing heavier than the standard library
and :mod:`kfkit.errors` (orjson when it is installed): no torch, no KServe, no numpy. Every problem is a
:class:`~kfkit.errors.InvalidInput` (HTTP 400) whose message names the attribute and the fix.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kfkit.errors import InvalidInput
from kfkit.serving.messages import json_kind, quote_list

try:
    from orjson import loads as _loads
except ImportError:  # the drift environment has no orjson
    import json

    def _loads(data: bytes) -> Any:
        return json.loads(data, parse_constant=_refuse_constant)

    def _refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")


__all__ = ["CloudEventRequest", "REQUIRED_HEADERS", "SPEC_VERSIONS", "parse_cloudevent"]

REQUIRED_HEADERS = ("ce-specversion", "ce-id", "ce-source", "ce-type")
"""The headers of a binary-mode CloudEvent; any one of them makes a request a CloudEvent."""
SPEC_VERSIONS = frozenset({"1.0", "0.3"})
"""CloudEvents spec versions accepted."""
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


@dataclass(slots=True)
class CloudEventRequest:
    """A request that came as a CloudEvent: its attributes and the data inside."""

    binary: bool
    """Binary mode (attributes in ce-* headers) rather than structured (one JSON envelope)."""
    attributes: dict[str, Any]
    """CloudEvent attributes (id, source, type, specversion, ...)."""
    data: Any
    """The event data: raw bytes (binary mode) or the already-decoded JSON value (structured mode)."""


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> CloudEventRequest | None:
    """Recognise and validate a CloudEvent (binary or structured mode); None for a plain request.

    Binary mode is any request with a ``ce-specversion``, ``ce-id``, ``ce-source`` or ``ce-type`` header;
    structured mode is Content-Type ``application/cloudevents+json``.

    Args:
        headers: Request headers, names in lower case.
        body: The request body.

    Raises:
        InvalidInput: a required attribute is missing or empty, the spec version is unknown, the body is
            empty, or the structured envelope is not a JSON object with ``data``.
    """
    if any(name in headers for name in REQUIRED_HEADERS):
        return _binary(headers, body)
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != STRUCTURED_CONTENT_TYPE:
        return None
    return _structured(body)


def _binary(headers: Mapping[str, str], body: bytes) -> CloudEventRequest:
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name, "").strip()]
    if missing:
        raise InvalidInput(
            f"CloudEvent is missing or has empty {quote_list(missing)}; a binary-mode CloudEvent needs the "
            "headers ce-specversion: 1.0, ce-id, ce-source and ce-type"
        )
    version = headers["ce-specversion"].strip()
    if version not in SPEC_VERSIONS:
        raise InvalidInput(f"CloudEvent header ce-specversion: {version!r} is not supported; send ce-specversion: 1.0")
    if not body:
        raise InvalidInput(
            f"CloudEvent {headers['ce-id']!r} has an empty body; put the inference request (JSON) in the body"
        )
    attributes = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
    return CloudEventRequest(binary=True, attributes=attributes, data=body)


def _structured(body: bytes) -> CloudEventRequest:
    envelope = _decode(body, "structured CloudEvent")
    if not isinstance(envelope, dict):
        raise InvalidInput(f"structured CloudEvent is {json_kind(envelope)}, not a JSON object")
    missing = [key for key in ("specversion", "id", "source", "type") if not _nonempty_str(envelope.get(key))]
    if missing:
        raise InvalidInput(
            f"structured CloudEvent is missing or has non-string {quote_list(missing)}; it needs specversion "
            '"1.0", id, source, type and data'
        )
    if envelope["specversion"] not in SPEC_VERSIONS:
        raise InvalidInput(f"CloudEvent specversion {envelope['specversion']!r} is not supported; send \"1.0\"")
    if "data" in envelope:
        data = envelope["data"]
    elif "data_base64" in envelope:
        try:
            decoded = base64.b64decode(envelope["data_base64"], validate=True)
        except (binascii.Error, TypeError, ValueError) as e:
            raise InvalidInput(f"CloudEvent data_base64 is not base64: {e}") from None
        data = _decode(decoded, "CloudEvent data_base64")
    else:
        raise InvalidInput(f"structured CloudEvent {envelope['id']!r} has no data; put the inference request in data")
    attributes = {key: value for key, value in envelope.items() if key not in ("data", "data_base64")}
    return CloudEventRequest(binary=False, attributes=attributes, data=data)


def _decode(data: bytes, what: str) -> Any:
    """JSON ``data``, or a 400 saying where it breaks (the wording of the server's own body decoding)."""
    try:
        return _loads(data)
    except ValueError as e:  # orjson's and json's decode errors both are ValueErrors
        if not data.strip():
            raise InvalidInput(f"{what} is empty; send a JSON object with Content-Type: application/json") from None
        hint = ""
        if b"NaN" in data or b"Infinity" in data:
            hint = "; NaN and Infinity are not JSON: send finite numbers (impute missing values)"
        raise InvalidInput(f"{what} is not valid JSON ({e}){hint}") from None


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())
