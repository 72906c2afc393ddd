"""Request validation for every protocol in one place: V1, V2 REST (JSON and binary), V2 gRPC, CloudEvents.

Every check raises :class:`RequestError` with a message that names the problem and the fix. The REST front
answers it with ``error.status_code`` and ``{"error": message}``, the gRPC service with ``error.grpc_status``;
nothing a client sends reaches the model unless it is a finite float32 batch of the right width.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import kserve.errors
import numpy as np
import orjson
import simdjson

from kfkit import errors
from kfkit.model.names import INPUT_NAME as V2_INPUT_NAME

if TYPE_CHECKING:
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
    from kserve.protocol.infer_type import InferRequest

__all__ = [
    "RequestError",
    "ParsedRequest",
    "CloudEventRequest",
    "RequestValidator",
    "V2_OUTPUTS",
    "BINARY_HEADER",
    "parse_json",
    "parse_v1_json",
    "parse_v2_json",
    "check_body_size",
    "parse_content_length",
    "parse_binary_header_length",
    "parse_cloudevent",
]

V2_OUTPUTS = (("probability", "FP32"), ("label", "INT64"))
"""Names and datatypes of the V2 output tensors, each of shape [N]."""
OUTPUT_NAMES = tuple(name for name, _ in V2_OUTPUTS)

BINARY_HEADER = "inference-header-content-length"
"""V2 binary tensor extension: length of the JSON part of a body whose tensors follow as raw bytes."""

# Numeric datatypes and how their values are laid out as raw (little-endian) bytes; all are scored as float32.
_BINARY_DTYPES = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
# The gRPC InferTensorContents field each datatype carries its values in (FP16 has none: raw bytes only).
_GRPC_CONTENTS = {
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
}
_CONTENTS_DTYPES = {
    "fp32_contents": np.float32,
    "fp64_contents": np.float64,
    "int_contents": np.int32,
    "int64_contents": np.int64,
    "uint_contents": np.uint32,
    "uint64_contents": np.uint64,
}
# InferTensorContents fields whose values are fixed-width floats: (tag byte of the packed field, dtype).
# The tag is (field number << 3) | 2, wire type 2 being "length-delimited" (grpc_predict_v2.proto: 6 and 7).
_PACKED_FLOAT_FIELDS = {"fp32_contents": (6 << 3 | 2, np.dtype("<f4")), "fp64_contents": (7 << 3 | 2, np.dtype("<f8"))}
_SIMDJSON_MIN_BYTES = 1024  # smaller V2 bodies decode faster with orjson (see parse_v2_json)
_V2_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_V2_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_V2_OUTPUT_KEYS = frozenset({"name", "parameters"})
_CE_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")
_CE_SPECVERSIONS = frozenset({"1.0", "0.3"})
_MAX_REPORTED = 3  # offending positions quoted in one message
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# A gRPC status for each HTTP status a request error can carry (the grpc-gateway mapping).
_GRPC_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
}


class RequestError(errors.InvalidInput, kserve.errors.InvalidInput):
    """A request the server will not score; ``status_code`` is its HTTP status (400 unless said otherwise).

    Both kfkit's and KServe's ``InvalidInput``: KServe's own handlers answer it with 400 and a JSON ``error``
    too, and kfkit code can catch it as a ``KfkitError``.
    """

    status_code = 400

    def __init__(self, reason: str, *, status_code: int | None = None) -> None:
        super().__init__(reason)
        self.args = (reason,)  # kserve's __init__ does not pass the reason on to Exception
        self.reason = reason
        if status_code is not None:
            self.status_code = status_code

    @property
    def grpc_status(self) -> str:
        """Name of the ``grpc.StatusCode`` for this error (INVALID_ARGUMENT, NOT_FOUND, ...)."""
        return _GRPC_STATUS.get(self.status_code, "INVALID_ARGUMENT")


@dataclass(slots=True)
class ParsedRequest:
    """A validated inference request: the batch to score and how to answer."""

    features: np.ndarray
    """C-contiguous, writable float32 array of shape (N, n_features), all finite."""
    request_id: str | None = None
    """The client's request id, echoed in the response."""
    outputs: tuple[str, ...] = OUTPUT_NAMES
    """Output tensors to return, in order."""
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to return as raw bytes (V2 binary extension; gRPC raw_output_contents)."""


@dataclass(slots=True)
class CloudEventRequest:
    """A request that came as a CloudEvent: its attributes and the data inside."""

    binary: bool
    """Binary mode (attributes in ce-* headers) rather than structured (one JSON envelope)."""
    attributes: dict[str, Any]
    """CloudEvent attributes (id, source, type, specversion, ...)."""
    data: Any
    """The event data: raw bytes (binary mode) or the already-decoded JSON value (structured mode)."""


def _packed_floats(contents: Any, field: str) -> np.ndarray | None:
    """The values of ``contents.fp32_contents`` (or ``fp64_contents``) as an array, read from the wire bytes.

    Reading a repeated protobuf field element by element builds a Python float per value (110 µs for 64 rows
    of 30). In proto3 wire format, a repeated float field is packed: one tag byte, the byte length as a
    varint, then the values as little-endian IEEE floats, which numpy reads in place. Returns None when the
    message holds anything else (no values, another field as well, an integer field), for the caller's
    checks to name.
    """
    wire = _PACKED_FLOAT_FIELDS.get(field)
    if wire is None:
        return None
    tag, dtype = wire
    data = contents.SerializeToString()
    if len(data) < 2 or data[0] != tag:
        return None
    length, shift, position = 0, 0, 1
    while position < len(data):  # the varint: 7 bits per byte, low bits first, high bit set on all but the last
        byte = data[position]
        length |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            break
        shift += 7
    if position + length != len(data) or length % dtype.itemsize:
        return None
    return np.frombuffer(data, dtype=dtype, offset=position)


def parse_json(body: bytes | memoryview, *, what: str = "request body") -> Any:
    """Decode JSON, turning a decode error into a 400 that says where the text breaks.

    Raises:
        RequestError: the bytes are not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        text = bytes(body)
        if not text.strip():
            raise RequestError(f"{what} is empty; send a JSON object with Content-Type: application/json") from None
        hint = ""
        if b"NaN" in text or b"Infinity" in text:
            hint = "; NaN and Infinity are not JSON: send finite numbers (impute missing values)"
        raise RequestError(f"{what} is not valid JSON ({e}){hint}") from None


def parse_v2_json(body: bytes) -> Any:
    """Decode a V2 JSON request; each input's flat numeric ``data`` arrives as a float64 array, not a list.

    A batch of 64 rows is 1,920 numbers: building (and then converting) a Python float for each costs about
    100 µs, most of a request's time. simdjson parses the numbers straight into a buffer instead (about 30
    µs). Everything else in the body is decoded as orjson would decode it, and anything unusual in ``data``
    (strings, null, booleans, nested lists) comes back as a list, so :meth:`RequestValidator.v2` checks it
    and reports the problem exactly as for any other body. Text that is not JSON goes to
    :func:`parse_json`, which names where it breaks. Bodies under 1 KB (a few rows) go to orjson directly:
    there, simdjson's fixed cost outweighs what it saves (measured crossover: 4 to 8 rows of 30 numbers).

    Raises:
        RequestError: the bytes are not JSON.
    """
    return _parse_fast(body, "inputs", _v2_inputs)


def parse_v1_json(body: bytes) -> Any:
    """Decode a V1 request; ``instances`` given as rows of numbers arrive as one 2-D float64 array.

    The V1 twin of :func:`parse_v2_json` (64 rows: 43 µs instead of 110). Rows of ``{feature: value}``,
    ragged or nested rows and non-numbers come back as lists, for :meth:`RequestValidator.v1` to check.

    Raises:
        RequestError: the bytes are not JSON.
    """
    return _parse_fast(body, "instances", _rows)


def _parse_fast(body: bytes, field: str, decode_field: Callable[[Any], Any]) -> Any:
    """``body`` decoded by simdjson, the top-level ``field`` by ``decode_field``; orjson when that cannot be.

    orjson decodes small bodies (faster there), text that is not JSON (its message says where it breaks),
    other top-level values than an object, and objects with a repeated name.
    """
    if len(body) < _SIMDJSON_MIN_BYTES:
        return parse_json(body)
    try:
        # One parser per call: a simdjson parser cannot parse again while proxies of its last document live.
        document = simdjson.Parser().parse(body)
    except (ValueError, RuntimeError):
        return parse_json(body)
    decoded = _object(document, field, decode_field) if isinstance(document, simdjson.Object) else None
    return parse_json(body) if decoded is None else decoded


def _object(document: Any, field: str, decode_field: Callable[[Any], Any]) -> dict | None:
    """A simdjson object as a dict, ``field`` decoded by ``decode_field``; None when a name repeats.

    keys() and [] keep values lazy (items() would build every number first); but [] finds the first of
    repeated names where orjson keeps the last, so such objects are left to a decoder that agrees.
    """
    keys = list(document.keys())
    if len(set(keys)) != len(keys):
        return None
    return {key: decode_field(document[key]) if key == field else _plain(document[key]) for key in keys}


def _rows(instances: Any) -> Any:
    """V1 ``instances``: rows of numbers, all of one length, as a 2-D float64 array; anything else as a list."""
    if not isinstance(instances, simdjson.Array) or not len(instances):
        return _plain(instances)
    rows = [instances[i] for i in range(len(instances))]
    if not all(isinstance(row, simdjson.Array) for row in rows):
        return instances.as_list()  # {feature: value} rows, or a mix
    widths = {len(row) for row in rows}
    try:
        values = np.frombuffer(instances.as_buffer(of_type="d"), dtype=np.float64)
    except (TypeError, ValueError):  # a string, null, boolean or object among the values
        return instances.as_list()
    # as_buffer flattens every level: equal row lengths adding up to the number count mean flat, even rows
    if len(widths) != 1 or len(values) != len(rows) * next(iter(widths)):
        return instances.as_list()
    return values.reshape(len(rows), -1)


def _v2_inputs(inputs: Any) -> Any:
    """V2 ``inputs``: each tensor's flat numeric ``data`` as a float64 array; anything else as orjson would."""
    if not isinstance(inputs, simdjson.Array):
        return _plain(inputs)
    return [_v2_input(inputs[i]) for i in range(len(inputs))]


def _v2_input(tensor: Any) -> Any:
    if isinstance(tensor, simdjson.Object) and (decoded := _object(tensor, "data", _numbers)) is not None:
        return decoded
    return _plain(tensor)  # not an object, or a repeated name: as_dict() keeps the last, as orjson does


def _numbers(data: Any) -> Any:
    """A flat JSON list of numbers as a float64 array; anything else as orjson would decode it."""
    if isinstance(data, simdjson.Array):
        try:
            buffer = data.as_buffer(of_type="d")
        except (TypeError, ValueError):  # a string, null, boolean or object among the values
            return data.as_list()
        values = np.frombuffer(buffer, dtype=np.float64)
        # as_buffer flattens nested lists; only a flat list has as many elements as numbers
        if len(values) == len(data):
            return values
        return data.as_list()
    return _plain(data)


def _plain(value: Any) -> Any:
    """A simdjson proxy as the dict or list orjson would give; scalars are already plain."""
    if isinstance(value, simdjson.Object):
        return value.as_dict()
    if isinstance(value, simdjson.Array):
        return value.as_list()
    return value


def check_body_size(size: int, limit: int) -> None:
    """Refuse a body over ``limit`` bytes with 413.

    Raises:
        RequestError: with status 413.
    """
    if size > limit:
        raise RequestError(
            f"request body of {size} bytes is over this server's limit of {limit} bytes; send fewer rows per "
            "request (or raise serving.max_body_bytes / --max-body-bytes)",
            status_code=413,
        )


def parse_content_length(value: str | None) -> int | None:
    """The Content-Length header as an int (None when absent).

    Raises:
        RequestError: the header is not a non-negative integer.
    """
    if value is None:
        return None
    if not value.isdigit() or not value.isascii():
        raise RequestError(f"header content-length: {value!r} is not a non-negative integer")
    return int(value)


def parse_binary_header_length(value: str, body_size: int) -> int:
    """Validate the ``inference-header-content-length`` header of a V2 binary request.

    Args:
        value: The header value.
        body_size: Length of the whole body.

    Returns:
        The length of the body's JSON part.

    Raises:
        RequestError: the value is not an integer between 1 and the body length.
    """
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise RequestError(
            f"header {BINARY_HEADER}: {value!r} is not a byte count; set it to the length of the JSON part of "
            "the body (the raw tensor bytes follow it), or drop the header and send plain JSON"
        )
    length = int(text)
    if not 0 < length <= body_size:
        raise RequestError(
            f"header {BINARY_HEADER}: {length} does not fit a body of {body_size} bytes; it must be the length of "
            "the JSON part (1 to the body length)"
        )
    return length


def parse_cloudevent(headers: Mapping[str, str], body: bytes) -> CloudEventRequest | None:
    """Recognise and validate a CloudEvent (binary or structured mode); None for a plain request.

    Binary mode is any request with a ``ce-specversion``, ``ce-id``, ``ce-source`` or ``ce-type`` header;
    structured mode is Content-Type ``application/cloudevents+json``.

    Raises:
        RequestError: a required attribute is missing or empty, the spec version is unknown, the body is
            empty, or the structured envelope is not a JSON object with ``data``.
    """
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if any(name in headers for name in _CE_REQUIRED):
        missing = [name for name in _CE_REQUIRED if not headers.get(name, "").strip()]
        if missing:
            raise RequestError(
                f"CloudEvent is missing or has empty {_quote_list(missing)}; a binary-mode CloudEvent needs the "
                "headers ce-specversion: 1.0, ce-id, ce-source and ce-type"
            )
        version = headers["ce-specversion"].strip()
        if version not in _CE_SPECVERSIONS:
            raise RequestError(
                f"CloudEvent header ce-specversion: {version!r} is not supported; send ce-specversion: 1.0"
            )
        if not body:
            raise RequestError(
                f"CloudEvent {headers['ce-id']!r} has an empty body; put the inference request (JSON) in the body"
            )
        attributes = {name[3:]: value for name, value in headers.items() if name.startswith("ce-")}
        return CloudEventRequest(binary=True, attributes=attributes, data=body)
    if content_type != "application/cloudevents+json":
        return None
    envelope = parse_json(body, what="structured CloudEvent")
    if not isinstance(envelope, dict):
        raise RequestError(f"structured CloudEvent is {_json_kind(envelope)}, not a JSON object")
    missing = [key for key in ("specversion", "id", "source", "type") if not _nonempty_str(envelope.get(key))]
    if missing:
        raise RequestError(
            f"structured CloudEvent is missing or has non-string {_quote_list(missing)}; it needs specversion "
            '"1.0", id, source, type and data'
        )
    if envelope["specversion"] not in _CE_SPECVERSIONS:
        raise RequestError(f"CloudEvent specversion {envelope['specversion']!r} is not supported; send \"1.0\"")
    if "data" in envelope:
        data = envelope["data"]
    elif "data_base64" in envelope:
        try:
            data = parse_json(base64.b64decode(envelope["data_base64"], validate=True), what="CloudEvent data_base64")
        except (binascii.Error, TypeError, ValueError) as e:
            if isinstance(e, RequestError):
                raise
            raise RequestError(f"CloudEvent data_base64 is not base64: {e}") from None
    else:
        raise RequestError(f"structured CloudEvent {envelope['id']!r} has no data; put the inference request in data")
    attributes = {key: value for key, value in envelope.items() if key not in ("data", "data_base64")}
    return CloudEventRequest(binary=False, attributes=attributes, data=data)


class RequestValidator:
    """Turns requests of every protocol into a validated float32 batch for one model's features."""

    def __init__(self, feature_names: Sequence[str]) -> None:
        """Bind the validator to the model's input columns (in the model's order)."""
        self.feature_names = list(feature_names)
        self.n_features = len(self.feature_names)
        self._feature_set = frozenset(self.feature_names)
        names = self.feature_names
        self._width_hint = f"{len(names)} numbers (" + ", ".join(names[:2]) + (", ...)" if len(names) > 2 else ")")

    # ---- KServe V1 -------------------------------------------------------------------------------

    def v1(self, payload: Any) -> np.ndarray:
        """Validate a V1 body: ``{"instances": [[x0, x1, ...], ...]}`` or rows of ``{feature: value}``.

        Raises:
            RequestError: the body cannot be scored.
        """
        if not isinstance(payload, dict):
            raise RequestError(
                f"request body is {_json_kind(payload)}, not a JSON object; "
                f'send {{"instances": [[{self._width_hint}], ...]}} with Content-Type: application/json'
            )
        instances = payload.get("instances")
        if not isinstance(instances, list | np.ndarray):
            raise RequestError(
                f'expected {{"instances": [[{self._width_hint}], ...]}} (a list of rows); '
                f"got keys {sorted(map(str, payload))}"
            )
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            instances = self._named_rows(instances)
        return self.features(instances, where="instances")

    def _named_rows(self, instances: list) -> list[list[Any]]:
        """Rows of ``{feature name: value}`` reordered into the model's feature order."""
        names, expected = self.feature_names, self._feature_set
        rows = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(
                    f"instances[{i}] is {_json_kind(instance)} but instances[0] is an object; "
                    "send every row as {feature name: value} or every row as a list"
                )
            if instance.keys() != expected:
                missing = [n for n in names if n not in instance]
                extra = sorted(str(k) for k in instance if k not in expected)
                problems = [
                    f"missing {_quote_list(missing)}" if missing else "",
                    f"unknown {_quote_list(extra)}" if extra else "",
                ]
                raise RequestError(
                    f"instances[{i}]: {'; '.join(p for p in problems if p)}; "
                    f"the model takes exactly these {len(names)} features: {_quote_list(names)}"
                )
            rows.append([instance[n] for n in names])
        return rows

    # ---- Open Inference Protocol (V2) REST ---------------------------------------------------------

    def v2(self, body: Any, *, binary: bytes | memoryview | None = None) -> ParsedRequest:
        """Validate a V2 JSON request body (already decoded), with the binary part of a binary request.

        Raises:
            RequestError: the body breaks the V2 schema or cannot be scored.
        """
        if not isinstance(body, dict):
            raise RequestError(
                f"V2 request body is {_json_kind(body)}, not a JSON object; send "
                f'{{"inputs": [{{"name": "{V2_INPUT_NAME}", "shape": [N, {self.n_features}], "datatype": "FP32", '
                '"data": [...]}]}'
            )
        if extra := body.keys() - _V2_REQUEST_KEYS:
            raise RequestError(
                f"unknown field(s) {_quote_list(sorted(map(str, extra)))} in the V2 request; "
                "it takes id, parameters, inputs and outputs"
            )
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise RequestError(f'"id" must be a string, got {_json_kind(request_id)}')
        parameters = _parameters(body.get("parameters"), where="request")
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise RequestError(
                f'"inputs" must be a list of tensors, got {_json_kind(inputs) if "inputs" in body else "nothing"}; '
                f'send "inputs": [{{"name": "{V2_INPUT_NAME}", "shape": [N, {self.n_features}], "datatype": "FP32", '
                '"data": [...]}]'
            )
        self._one_input([t.get("name") if isinstance(t, dict) else t for t in inputs])
        tensor = inputs[0]
        if not isinstance(tensor, dict):
            raise RequestError(f"inputs[0] is {_json_kind(tensor)}, not a tensor object with name, shape, datatype")
        name = tensor.get("name")
        if not _nonempty_str(name):
            raise RequestError(f'inputs[0] needs a "name" string, got {_json_kind(name)}')
        where = f"input {name!r}"
        if extra := tensor.keys() - _V2_INPUT_KEYS:
            raise RequestError(
                f"{where} has unknown field(s) {_quote_list(sorted(map(str, extra)))}; "
                "a tensor takes name, shape, datatype, data and parameters"
            )
        datatype = self._datatype(tensor.get("datatype"), where)
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise RequestError(f'{where}: "shape" must be a list of non-negative integers, got {shape!r:.80}')
        tensor_parameters = _parameters(tensor.get("parameters"), where=where)
        binary_size = tensor_parameters.get("binary_data_size") if tensor_parameters else None
        data = tensor.get("data")
        if binary_size is not None:
            if data is not None:
                raise RequestError(f'{where} has both "data" and parameters.binary_data_size; send one of them')
            if type(binary_size) is not int or binary_size < 0:
                raise RequestError(f"{where}: parameters.binary_data_size must be a byte count, got {binary_size!r}")
            if binary is None:
                raise RequestError(
                    f"{where} has parameters.binary_data_size but the request has no binary part; send the header "
                    f"{BINARY_HEADER}: <length of the JSON part> and the raw tensor bytes after the JSON"
                )
            if binary_size != len(binary):
                raise RequestError(
                    f"{where}: parameters.binary_data_size is {binary_size} but {len(binary)} bytes follow the JSON "
                    "part of the body (truncated or padded binary data?)"
                )
            values: Any = self._decode_binary(binary, datatype, shape, where)
        else:
            if data is None:
                raise RequestError(f'{where} has no "data"; send its values as a list of numbers, row by row')
            if not isinstance(data, list | np.ndarray):
                raise RequestError(f'{where}: "data" must be a list of numbers, got {_json_kind(data)}')
            if binary:
                raise RequestError(
                    f"{len(binary)} bytes follow the JSON part of the body but no input has "
                    "parameters.binary_data_size; send JSON data or binary data, not both"
                )
            values = data
        features = self.features(values, where=where, shape=shape)
        outputs, binary_outputs = self._requested_outputs(body.get("outputs"), parameters)
        return ParsedRequest(features, request_id, outputs, binary_outputs)

    def v2_binary(self, body: bytes, header_value: str) -> ParsedRequest:
        """Validate a V2 request that uses the binary tensor extension (JSON part, then raw tensor bytes).

        Raises:
            RequestError: a bad ``inference-header-content-length``, a JSON part that is not valid, or binary
                data that does not match its declared size, datatype and shape.
        """
        json_length = parse_binary_header_length(header_value, len(body))
        header = parse_json(body[:json_length], what=f"JSON part of the binary request (first {json_length} bytes)")
        if isinstance(header, dict) and "inputs" not in header:
            raise RequestError(
                f'the JSON part of the binary request has no "inputs" (keys: {sorted(map(str, header))}); '
                f"{BINARY_HEADER} must be the length of a V2 request whose inputs carry parameters.binary_data_size"
            )
        return self.v2(header, binary=memoryview(body)[json_length:])

    def infer_request(self, request: InferRequest) -> ParsedRequest:
        """Validate KServe's decoded ``InferRequest`` (what KServe's own REST and gRPC paths hand a model).

        Raises:
            RequestError: the request cannot be scored.
        """
        self._one_input([t.name for t in request.inputs])
        tensor = request.inputs[0]
        where = f"input {tensor.name!r}"
        self._datatype(tensor.datatype, where)
        shape = list(tensor.shape)
        data = tensor.data
        if data is not None and len(data) > 0:
            values: Any = data if isinstance(data, list) else list(data)  # gRPC gives a protobuf container
        else:  # binary data: kserve decodes and reshapes it
            try:
                values = tensor.as_numpy()
            except (ValueError, TypeError) as e:
                raise RequestError(f"{where} with shape {shape} cannot be decoded: {e}") from e
        features = self.features(values, where=where, shape=shape)
        outputs = tuple(o.name for o in request.request_outputs or ()) or OUTPUT_NAMES
        self._check_output_names(outputs)
        binary = frozenset(outputs) if request.use_binary_outputs else frozenset()
        return ParsedRequest(features, request.id or None, outputs, binary)

    # ---- Open Inference Protocol (V2) gRPC ---------------------------------------------------------

    def grpc(self, request: ModelInferRequest) -> ParsedRequest:
        """Validate a gRPC ``ModelInferRequest`` (values in ``contents`` or in ``raw_input_contents``).

        Outputs come back raw when the input came raw, as KServe does. Protobuf field access builds Python
        objects, so the common case touches each field once and the error path does the rest.

        Raises:
            RequestError: the request cannot be scored.
        """
        inputs = request.inputs
        if len(inputs) != 1:
            self._one_input([t.name for t in inputs])
        tensor = inputs[0]
        datatype = tensor.datatype
        if datatype not in _BINARY_DTYPES:
            self._datatype(datatype, f"input {tensor.name!r}")
        shape = list(tensor.shape)
        if shape and min(shape) < 0:
            raise RequestError(f"input {tensor.name!r}: shape {shape} has a negative dimension")
        contents = tensor.contents
        raw = request.raw_input_contents
        if raw:
            if len(raw) != 1:
                raise RequestError(f"raw_input_contents has {len(raw)} entries for 1 input; send exactly one")
            if contents.ByteSize():
                filled = contents.ListFields()[0][0].name
                raise RequestError(
                    f"input {tensor.name!r} has both contents.{filled} and raw_input_contents; send one of them"
                )
            values: Any = self._decode_binary(raw[0], datatype, shape, f"input {tensor.name!r}")
        else:
            field = _GRPC_CONTENTS.get(datatype)
            if field is None:
                raise RequestError(f"input {tensor.name!r}: {datatype} values can only be sent as raw_input_contents")
            values = _packed_floats(contents, field)
            if values is None:
                filled = [f.name for f, _ in contents.ListFields()]
                if filled != [field]:
                    got = f"contents.{filled[0]}" if filled else "no values"
                    raise RequestError(
                        f"input {tensor.name!r} has datatype {datatype}, whose values go in contents.{field} "
                        f"(or raw_input_contents); got {got}"
                    )
                values = np.array(getattr(contents, field), dtype=_CONTENTS_DTYPES[field])
        features = self.features(values, where=f"input {tensor.name!r}", shape=shape)
        outputs = OUTPUT_NAMES
        if request.outputs:
            outputs = tuple(o.name for o in request.outputs)
            self._check_output_names(outputs)
        return ParsedRequest(features, request.id or None, outputs, frozenset(outputs) if raw else frozenset())

    # ---- shared checks ---------------------------------------------------------------------------

    def features(self, values: Any, *, where: str, shape: Sequence[int] | None = None) -> np.ndarray:
        """Validate a batch and return it as a C-contiguous, writable float32 array of shape (N, n_features).

        Every plain input error is caught here: ragged or non-numeric values, a V2 shape that does not
        match its data, an empty batch, the wrong width, NaN/inf or values beyond float32.

        Raises:
            RequestError: naming the first offending row/feature and the fix.
        """
        n = self.n_features
        if isinstance(values, np.ndarray):
            array = values
        else:
            try:
                array = np.asarray(values)
            except ValueError as e:  # ragged nesting: name the first row that differs
                raise RequestError(f"{where}{self._ragged(values)}; every row needs {self._width_hint}") from e
        if array.dtype.kind not in "iuf":
            position, value = _first_non_number(values)
            shown = "null" if value is None else repr(value)
            raise RequestError(
                f"{where}{self._describe(position, shape)} is {shown:.80}, not a number; "
                "send every feature as a JSON number (no strings, null, booleans or nested lists)"
            )
        if shape is not None:
            if len(shape) != 2 or math.prod(shape) != array.size:
                raise RequestError(
                    f"{where} has shape {list(shape)} and {array.size} values; "
                    f"send shape [N, {n}] with N*{n} values, row by row"
                )
            array = array.reshape(shape)
        if array.size == 0:
            raise RequestError(f"{where} is empty; send at least one row of {n} numbers")
        if array.ndim != 2:
            hint = f"; wrap a single row in a list: [[{self._width_hint}]]" if array.ndim == 1 else ""
            raise RequestError(f"{where} must be a list of rows (2-D), got {array.ndim}-D{hint}")
        if array.shape[1] != n:
            raise RequestError(f"{where}: each row needs {self._width_hint}, got {array.shape[1]}")
        # Two reductions decide the common case: NaN fails both comparisons, and a float whose magnitude is
        # within float32's range casts without overflow. Integers always fit. The cast copies, so the batch
        # is C-contiguous and writable (torch wants to own writable memory) even from a read-only buffer.
        # float() first: comparing numpy scalars costs more than the two reductions themselves.
        if array.dtype.kind == "f" and not (
            float(np.minimum.reduce(array, axis=None)) >= -_FLOAT32_MAX
            and float(np.maximum.reduce(array, axis=None)) <= _FLOAT32_MAX
        ):
            self._report_non_finite(array, where)
        return array.astype(np.float32, order="C")

    def _report_non_finite(self, array: np.ndarray, where: str) -> None:
        """Name NaN, infinite and beyond-float32 values (error path; values that round into range pass)."""
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(array.astype(np.float32))
        if not bad.any():
            return
        spots = ", ".join(
            f"row {r} feature {self.feature_names[c]!r}" for r, c in np.argwhere(bad)[:_MAX_REPORTED].tolist()
        )
        raise RequestError(
            f"{where} has {int(bad.sum())} NaN, infinite or beyond-float32 values ({spots}); "
            "send finite numbers (impute missing values before calling the model)"
        )

    def _one_input(self, names: list[Any]) -> None:
        if len(names) != 1:
            got = ", ".join(f"{n!r:.40}" for n in names[:_MAX_REPORTED]) or "none"
            raise RequestError(
                f"expected exactly 1 input tensor (e.g. {V2_INPUT_NAME!r}, shape [N, {self.n_features}]), "
                f"got {len(names)}: {got}"
            )

    def _datatype(self, datatype: Any, where: str) -> str:
        if not isinstance(datatype, str) or datatype not in _BINARY_DTYPES:
            shown = datatype if isinstance(datatype, str) else _json_kind(datatype)
            raise RequestError(f"{where} has datatype {shown:.40}; send FP32 (FP64 and integer types are accepted too)")
        return datatype

    def _decode_binary(self, raw: bytes | memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
        dtype = _BINARY_DTYPES[datatype]
        count = math.prod(shape)
        if len(raw) != count * dtype.itemsize:
            raise RequestError(
                f"{where} has {len(raw)} bytes of binary data, but shape {shape} of {datatype} needs "
                f"{count * dtype.itemsize} ({dtype.itemsize} per value); the data is truncated or the shape is wrong"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def _requested_outputs(self, outputs: Any, parameters: dict | None) -> tuple[tuple[str, ...], frozenset[str]]:
        default_binary = (parameters or {}).get("binary_data_output", False)
        if not isinstance(default_binary, bool):
            raise RequestError(f"parameters.binary_data_output must be true or false, got {default_binary!r:.40}")
        if outputs is None or outputs == []:
            return OUTPUT_NAMES, frozenset(OUTPUT_NAMES) if default_binary else frozenset()
        if not isinstance(outputs, list):
            raise RequestError(f'"outputs" must be a list of {{"name": ...}} objects, got {_json_kind(outputs)}')
        names: list[str] = []
        binary: set[str] = set()
        for i, output in enumerate(outputs):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise RequestError(f'outputs[{i}] must be an object with a "name" string, got {output!r:.80}')
            if extra := output.keys() - _V2_OUTPUT_KEYS:
                raise RequestError(f"outputs[{i}] has unknown field(s) {_quote_list(sorted(map(str, extra)))}")
            as_binary = _parameters(output.get("parameters"), where=f"outputs[{i}]").get("binary_data", default_binary)
            if not isinstance(as_binary, bool):
                raise RequestError(f"outputs[{i}].parameters.binary_data must be true or false, got {as_binary!r:.40}")
            names.append(output["name"])
            if as_binary:
                binary.add(output["name"])
        self._check_output_names(names)
        return tuple(names), frozenset(binary)

    @staticmethod
    def _check_output_names(names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in OUTPUT_NAMES]
        if unknown:
            raise RequestError(
                f"unknown output(s) {_quote_list(unknown)}; this model returns {_quote_list(list(OUTPUT_NAMES))}"
            )
        if len(set(names)) != len(names):
            raise RequestError(f"outputs {list(names)} name an output twice")

    def _describe(self, position: tuple[int, ...], shape: Sequence[int] | None) -> str:
        """``[r][c] (feature 'x')`` for a position in the request, naming the feature where known."""
        text = "".join(f"[{i}]" for i in position)
        n = self.n_features
        if len(position) == 1 and shape is not None and len(shape) == 2 and shape[1] == n:  # flat V2 data
            column = position[0] % n
        elif len(position) == 2:
            column = position[1]
        else:
            return text
        return f"{text} (feature {self.feature_names[column]!r})" if column < n else text

    def _ragged(self, values: Any) -> str:
        """Where a batch that numpy cannot make rectangular goes wrong (error path only)."""
        if isinstance(values, list) and all(isinstance(row, list) for row in values):
            for i, row in enumerate(values):
                if len(row) != self.n_features:
                    return f"[{i}] has {len(row)} values"
        return " mixes numbers and nested lists"


def _parameters(value: Any, *, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(f'{where}: "parameters" must be a JSON object, got {_json_kind(value)}')
    return value


def _nonempty_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _iter_leaves(values: Any, position: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    if isinstance(values, list | tuple):
        for i, item in enumerate(values):
            yield from _iter_leaves(item, (*position, i))
    else:
        yield position, values


def _first_non_number(values: Any) -> tuple[tuple[int, ...], Any]:
    """Position and value of the first leaf that is not an int or float (only called on the error path)."""
    if isinstance(values, np.ndarray):
        return (), f"an array of {values.dtype}"
    for position, value in _iter_leaves(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return position, value
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            return position, value
    return (), values


def _json_kind(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return "raw bytes (not decoded as JSON)"
    kinds = {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }
    return kinds.get(type(value), f"a {type(value).__name__}")


def _quote_list(names: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
