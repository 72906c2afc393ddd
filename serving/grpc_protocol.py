"""Open Inference Protocol (V2) gRPC messages: a ``ModelInferRequest`` decoded and checked, the answer encoded.

Values come in ``contents`` (typed repeated fields) or in ``raw_input_contents`` (little-endian bytes);
either way they end in the shared :class:`~kfkit.serving.tensors.TensorChecks`. Protobuf field access
builds Python objects, so the common case touches each field once and the error path does the rest. The
``ModelInferResponse`` is written as protobuf wire bytes directly (:class:`GrpcEncoder`), the same bytes
the message classes would serialize, without building a message object per output.
"""

from __future__ import annotations

import itertools
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.model.names import OUTPUT_NAMES, PROBABILITY, V2_OUTPUTS
from kfkit.serving.tensors import NUMERIC_DATATYPES, ParsedRequest, TensorChecks

if TYPE_CHECKING:
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest

__all__ = ["GrpcDecoder", "GrpcEncoder"]

# The InferTensorContents field each datatype carries its values in (FP16 has none: raw bytes only).
_CONTENTS = {
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


class GrpcDecoder:
    """``ModelInferRequest`` messages to a :class:`ParsedRequest`, for one model."""

    def __init__(self, checks: TensorChecks) -> None:
        """Decode for the model whose tensor ``checks`` these are."""
        self._checks = checks
        self._features = checks.features

    def decode(self, request: ModelInferRequest) -> ParsedRequest:
        """Validate a ``ModelInferRequest`` (values in ``contents`` or in ``raw_input_contents``).

        Outputs come back raw when the input came raw, as KServe does. The model name is the service's to
        check (it routes); this checks the tensors.

        Raises:
            InvalidInput: the request cannot be scored.
        """
        checks = self._checks
        inputs = request.inputs
        if len(inputs) != 1:
            checks.one_input([t.name for t in inputs])
        tensor = inputs[0]
        datatype = tensor.datatype
        where = f"input {tensor.name!r}"
        if datatype not in NUMERIC_DATATYPES:
            checks.datatype(datatype, where)
        shape = list(tensor.shape)
        if shape and min(shape) < 0:
            raise InvalidInput(f"{where}: shape {shape} has a negative dimension")
        contents = tensor.contents
        raw = request.raw_input_contents
        if raw:
            if len(raw) != 1:
                raise InvalidInput(f"raw_input_contents has {len(raw)} entries for 1 input; send exactly one")
            if contents.ByteSize():
                filled = contents.ListFields()[0][0].name
                raise InvalidInput(f"{where} has both contents.{filled} and raw_input_contents; send one of them")
            values: Any = checks.decode_binary(raw[0], datatype, shape, where)
        else:
            field = _CONTENTS.get(datatype)
            if field is None:
                raise InvalidInput(f"{where}: {datatype} values can only be sent as raw_input_contents")
            values = _packed_floats(contents, field)
            if values is None:
                filled = [f.name for f, _ in contents.ListFields()]
                if filled != [field]:
                    got = f"contents.{filled[0]}" if filled else "no values"
                    raise InvalidInput(
                        f"{where} has datatype {datatype}, whose values go in contents.{field} "
                        f"(or raw_input_contents); got {got}"
                    )
                values = np.array(getattr(contents, field), dtype=_CONTENTS_DTYPES[field])
        features = self._features(values, where=where, shape=shape)
        outputs = OUTPUT_NAMES
        if request.outputs:
            outputs = tuple(o.name for o in request.outputs)
            checks.output_names(outputs)
        return ParsedRequest(features, request.id or None, outputs, frozenset(outputs) if raw else frozenset())


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


class GrpcEncoder:
    """Scores to ``ModelInferResponse`` wire bytes, for one model version.

    Byte for byte what ``ModelInferResponse(...).SerializeToString()`` gives for the same answer (a test holds
    them equal): proto3 fields in field-number order, empty strings left out, repeated numbers packed. The
    labels are 0 or 1, so each is one varint byte.
    """

    def __init__(self, model_name: str, model_version: str | None) -> None:
        """Fix the parts of every answer that never change."""
        self._head = _string(1, model_name) + _string(2, model_version or "")
        # Ids for answers to requests that sent none: unique per process, cheaper than a uuid4 each.
        self._ids = map(f"{uuid.uuid4().hex[:12]}-{{:x}}".format, itertools.count(1))
        self._names = {name: _string(1, name) + _string(2, datatype) for name, datatype in V2_OUTPUTS}

    def encode(self, request: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> bytes:
        """The answer: raw output bytes for outputs the request wants raw, else typed (packed) contents."""
        parts = [self._head, _string(3, request.request_id or next(self._ids))]
        raw = []
        shape = _field(3, _varint(len(probabilities)))  # shape [rows], packed
        for name in request.outputs:
            tensor = self._names[name] + shape
            if name in request.binary_outputs:
                array = probabilities.astype("<f4", copy=False) if name == PROBABILITY else labels.astype("<i8")
                raw.append(_field(6, array.tobytes()))  # raw_output_contents
            elif name == PROBABILITY:
                tensor += _field(5, _field(6, probabilities.astype("<f4", copy=False).tobytes()))  # fp32_contents
            else:
                tensor += _field(5, _field(3, labels.astype(np.uint8).tobytes()))  # int64_contents
            parts.append(_field(5, tensor))  # outputs
        return b"".join(parts + raw)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) of a field number under 16: tag byte, length, bytes."""
    length = len(payload)
    if length < 0x80:  # the common case, a one-byte length
        return bytes((number << 3 | 2, length)) + payload
    return bytes((number << 3 | 2,)) + _varint(length) + payload


def _string(number: int, text: str) -> bytes:
    return _field(number, text.encode()) if text else b""  # proto3 leaves empty strings out
