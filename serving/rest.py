"""The REST front of the model server: a lean ASGI path for V1 predict and V2 infer, KServe's app for the rest.

``POST /v1/models/<m>:predict`` and ``POST /v2/models/<m>[/versions/<v>]/infer`` are answered here: the
body is read under the size limit (:mod:`~kfkit.serving.http_framing`), unwrapped when it is a CloudEvent
(:mod:`~kfkit.serving.cloudevents`), decoded (:mod:`~kfkit.serving.json_decoding`) and checked by its
protocol's decoder (:mod:`~kfkit.serving.v1_protocol`, :mod:`~kfkit.serving.v2_protocol`, which handles the
binary tensor extension too), then scored, counted and logged through the shared
:class:`~kfkit.serving.dataplane.DataPlane` and encoded straight to bytes, with no FastAPI routing, pydantic
models or KServe InferRequest/InferResponse conversions on the way. Every other request (health,
readiness, listing, /metrics) goes to KServe's FastAPI app, whose HTTP errors are rewritten to
``{"error": ...}``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

import orjson

from kfkit.errors import InvalidInput, KfkitError
from kfkit.serving.cloudevents import parse_cloudevent
from kfkit.serving.encoding import binary_headers, cloudevent_response, error_body
from kfkit.serving.http_framing import Receive, read_body
from kfkit.serving.json_decoding import parse_v1_json, parse_v2_json
from kfkit.serving.v1_protocol import V1Decoder
from kfkit.serving.v2_protocol import BINARY_HEADER, V2Decoder

if TYPE_CHECKING:
    from fastapi import FastAPI

    from kfkit.serving.dataplane import DataPlane

__all__ = ["RestFront", "install_error_handlers"]

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_log = logging.getLogger("kfkit.serving")
_V1_ROUTE = re.compile(r"/v1/models/([^/]+):(predict|explain)")
_V2_INFER = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
_REPOSITORY = re.compile(r"/v2/repository/models/([^/]+)/(load|unload)")
_JSON_HEADERS = ((b"content-type", b"application/json"),)
_CLIENT_GONE = 499  # nginx's "client closed request": counted, never sent


class RestFront:
    """ASGI app in front of KServe's FastAPI app; serves one model's inference routes itself."""

    def __init__(self, inner: ASGIApp, plane: DataPlane, *, max_body_bytes: int) -> None:
        """Bind the front to a served model's data plane.

        Args:
            inner: KServe's FastAPI app, for every request this front does not answer itself.
            plane: The shared path to the loaded model (checks, batcher, encoder, metrics, payload log).
            max_body_bytes: Largest request body accepted; bigger ones get 413.
        """
        self._inner = inner
        self._plane = plane
        self._v1 = V1Decoder(plane.checks).decode
        self._v2 = V2Decoder(plane.checks, model_name=plane.model_name, model_version=plane.model_version)
        self._score = plane.score
        self._encoder = plane.encoder
        self._max_body = max_body_bytes
        self._observe = plane.observe
        self._payload = plane.payload_logger
        name, version = plane.model_name, plane.model_version
        self._v1_path = f"/v1/models/{name}:predict"
        self._v2_paths = {f"/v2/models/{name}/infer"}
        metadata_paths = [f"/v2/models/{name}"]
        if version:
            self._v2_paths.add(f"/v2/models/{name}/versions/{version}/infer")
            metadata_paths.append(f"/v2/models/{name}/versions/{version}")
        # Answers that never change, encoded once.
        model_metadata = orjson.dumps(plane.metadata())
        self._cached = {path: model_metadata for path in metadata_paths}
        self._cached["/v2"] = orjson.dumps({"name": "kserve", "version": metadata.version("kserve"), "extensions": []})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if scope["type"] == "http":
            method = scope["method"]
            if method == "POST":
                return await self._post(scope, receive, send)
            if method == "GET" and self._plane.ready:
                body = self._cached.get(scope["path"])
                if body is not None:
                    return await _respond(send, 200, _JSON_HEADERS, body)
        await self._inner(scope, receive, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path in self._v2_paths:
            protocol = "v2"
        elif path == self._v1_path:
            protocol = "v1"
        else:
            return await self._other_post(path, scope, receive, send)
        started = time.perf_counter()
        status = 200
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = await read_body(receive, headers, self._max_body)
            status = _CLIENT_GONE if body is None else await self._infer(protocol, headers, body, send)
        except InvalidInput as e:
            status = e.status_code
            await _respond(send, status, _JSON_HEADERS, error_body(str(e)))
        except Exception as e:
            status = 500
            _log.exception("%s %s failed", scope["method"], path)
            await _respond(send, 500, _JSON_HEADERS, error_body(f"internal error scoring the request: {e!r:.300}"))
        finally:
            self._observe(protocol, status, time.perf_counter() - started)

    async def _infer(self, protocol: str, headers: dict[str, str], body: bytes, send: Send) -> int:
        event = parse_cloudevent(headers, body)
        payload: Any = body
        if event is not None:
            payload = event.data
        parsed = None
        if protocol == "v1":
            features = self._v1(parse_v1_json(payload) if isinstance(payload, bytes) else payload)
            probabilities, labels = await self._score(features)
            answer, json_length = self._encoder.v1(probabilities, labels), None
        else:
            binary_length = headers.get(BINARY_HEADER)
            if binary_length is not None and event is None:
                parsed = self._v2.decode_binary(body, binary_length)
            else:
                parsed = self._v2.decode(parse_v2_json(payload) if isinstance(payload, bytes) else payload)
            probabilities, labels = await self._score(parsed.features)
            answer, json_length = self._encoder.v2(parsed, probabilities, labels)
        if event is None:
            await _respond(send, 200, binary_headers(json_length), answer)
        else:
            ce_headers, ce_body = cloudevent_response(self._plane.model_name, event, answer)
            await _respond(send, 200, ce_headers, ce_body)
        if self._payload is not None:
            self._log_payload(headers, event, payload, parsed, answer, json_length, probabilities, labels)
        return 200

    def _log_payload(self, headers, event, payload, parsed, answer, json_length, probabilities, labels) -> None:
        """Queue the pair; bodies that are not plain JSON bytes are built later, by a sender."""
        encoder = self._encoder
        if parsed is not None and json_length is not None:
            response: Any = lambda: encoder.v2_response_json(parsed, probabilities, labels)  # noqa: E731
        else:
            response = answer
        if isinstance(payload, bytes) and BINARY_HEADER not in headers:
            request: Any = payload
        elif parsed is not None:
            request = lambda: encoder.v2_request_json(parsed)  # noqa: E731
        else:
            request = lambda: orjson.dumps(payload)  # noqa: E731
        event_id = (
            (event.attributes.get("id") if event is not None else None)
            or headers.get("x-request-id")
            or (parsed.request_id if parsed is not None else None)
            or str(uuid.uuid4())
        )
        self._plane.log(str(event_id), request, response)

    async def _other_post(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """POSTs to routes this front does not serve: name the model that is served, refuse repository edits."""
        name, version = self._plane.model_name, self._plane.model_version
        served = f"this server serves model {name!r}" + (f" version {version}" if version else "")
        if match := _V1_ROUTE.fullmatch(path):
            if match[2] == "explain":
                message = f"model {match[1]!r} has no explainer; {served}: POST /v1/models/{name}:predict"
            else:
                message = f"model {match[1]!r} is not served here; {served}: POST /v1/models/{name}:predict"
            protocol = "v1"
        elif match := _V2_INFER.fullmatch(path):
            wanted = repr(match[1]) + (f" version {match[2]}" if match[2] else "")
            message = f"model {wanted} is not served here; {served}: POST /v2/models/{name}/infer"
            protocol = "v2"
        elif _REPOSITORY.fullmatch(path):
            self._observe("v2", 403, 0.0)
            return await _respond(
                send,
                403,
                _JSON_HEADERS,
                error_body(
                    f"loading and unloading models is disabled: {served} (sha256-verified at start); "
                    "to serve another version, deploy it"
                ),
            )
        else:
            return await self._inner(scope, receive, send)
        self._observe(protocol, 404, 0.0)
        await _respond(send, 404, _JSON_HEADERS, error_body(message))


async def _respond(send: Send, status: int, headers: Any, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install_error_handlers(app: FastAPI) -> None:
    """Make KServe's FastAPI app answer its own HTTP errors (404, 405, 422) and kfkit's as ``{"error": ...}``.

    FastAPI answers an unknown route or method with ``{"detail": ...}`` and a body that fails a route's
    schema with 422; kfkit's contract is one error shape, so both are rewritten (the 422 becomes a 400).
    A :class:`~kfkit.errors.KfkitError` raised under one of KServe's routes gets its own status.
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def http_error(request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
        message = f"{detail}: {request.method} {request.url.path}"
        if exc.status_code == 404:
            message += "; see GET /v2/models for the served model and its routes"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def validation_error(request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}" for error in exc.errors()[:5]
        )
        return JSONResponse({"error": f"invalid request to {request.url.path}: {problems}"}, status_code=400)

    async def kfkit_error(request, exc: KfkitError) -> JSONResponse:  # noqa: ARG001 (Starlette's handler signature)
        return JSONResponse({"error": str(exc)}, status_code=exc.status_code)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(KfkitError, kfkit_error)
