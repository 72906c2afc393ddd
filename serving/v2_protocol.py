"""Open Inference Protocol (V2) REST requests: the JSON body, and the binary tensor extension, decoded and checked.

The JSON is decoded by :func:`kfkit.serving.json_decoding.parse_v2_json`; this module checks the V2 schema
(one input tensor with name, shape, datatype and data; requested outputs; the binary extension's sizes),
then hands the values to the shared :class:`~kfkit.serving.tensors.TensorChecks`.

KServe's own clients put ``model_name`` (and may put ``model_version``) in every request body: they are
accepted when they name the model the URL names, and refused with 400 naming both values when not.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.model.names import INPUT_NAME, OUTPUT_NAMES
from kfkit.serving.json_decoding import parse_json
from kfkit.serving.messages import json_kind, quote_list
from kfkit.serving.tensors import ParsedRequest, TensorChecks

__all__ = ["BINARY_HEADER", "V2Decoder", "parse_binary_header_length"]

BINARY_HEADER = "inference-header-content-length"
"""V2 binary tensor extension: length of the JSON part of a body whose tensors follow as raw bytes."""
_REQUEST_KEYS = frozenset({"id", "model_name", "model_version", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})


def parse_binary_header_length(value: str, body_size: int) -> int:
    """Validate the ``inference-header-content-length`` header of a V2 binary request.

    Args:
        value: The header value.
        body_size: Length of the whole body.

    Returns:
        The length of the body's JSON part.

    Raises:
        InvalidInput: the value is not an integer between 1 and the body length.
    """
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidInput(
            f"header {BINARY_HEADER}: {value!r} is not a byte count; set it to the length of the JSON part of "
            "the body (the raw tensor bytes follow it), or drop the header and send plain JSON"
        )
    length = int(text)
    if not 0 < length <= body_size:
        raise InvalidInput(
            f"header {BINARY_HEADER}: {length} does not fit a body of {body_size} bytes; it must be the length of "
            "the JSON part (1 to the body length)"
        )
    return length


class V2Decoder:
    """V2 REST request bodies to a :class:`ParsedRequest`, for one served model."""

    def __init__(self, checks: TensorChecks, *, model_name: str, model_version: str | None) -> None:
        """Decode for the model whose tensor ``checks`` these are, served as ``model_name`` (``model_version``)."""
        self._checks = checks
        self._features = checks.features
        self._model_name = model_name
        self._model_version = model_version
        n = checks.n_features
        self._example = f'{{"name": "{INPUT_NAME}", "shape": [N, {n}], "datatype": "FP32", "data": [...]}}'

    def decode(self, body: Any, *, binary: bytes | memoryview | None = None) -> ParsedRequest:
        """Validate a V2 JSON request body (already decoded), with the binary part of a binary request.

        Raises:
            InvalidInput: the body breaks the V2 schema, names another model, or cannot be scored.
        """
        if not isinstance(body, dict):
            raise InvalidInput(
                f'V2 request body is {json_kind(body)}, not a JSON object; send {{"inputs": [{self._example}]}}'
            )
        if extra := body.keys() - _REQUEST_KEYS:
            raise InvalidInput(
                f"unknown field(s) {quote_list(sorted(map(str, extra)))} in the V2 request; "
                "it takes id, model_name, model_version, parameters, inputs and outputs"
            )
        if "model_name" in body or "model_version" in body:
            self._check_model(body.get("model_name"), body.get("model_version"))
        request_id = body.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise InvalidInput(f'"id" must be a string, got {json_kind(request_id)}')
        parameters = _parameters(body.get("parameters"), where="request")
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            got = json_kind(inputs) if "inputs" in body else "nothing"
            raise InvalidInput(f'"inputs" must be a list of tensors, got {got}; send "inputs": [{self._example}]')
        self._checks.one_input([t.get("name") if isinstance(t, dict) else t for t in inputs])
        tensor = inputs[0]
        if not isinstance(tensor, dict):
            raise InvalidInput(f"inputs[0] is {json_kind(tensor)}, not a tensor object with name, shape, datatype")
        name = tensor.get("name")
        if not isinstance(name, str) or not name.strip():
            raise InvalidInput(f'inputs[0] needs a "name" string, got {json_kind(name)}')
        where = f"input {name!r}"
        if extra := tensor.keys() - _INPUT_KEYS:
            raise InvalidInput(
                f"{where} has unknown field(s) {quote_list(sorted(map(str, extra)))}; "
                "a tensor takes name, shape, datatype, data and parameters"
            )
        datatype = self._checks.datatype(tensor.get("datatype"), where)
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInput(f'{where}: "shape" must be a list of non-negative integers, got {shape!r:.80}')
        tensor_parameters = _parameters(tensor.get("parameters"), where=where)
        binary_size = tensor_parameters.get("binary_data_size") if tensor_parameters else None
        data = tensor.get("data")
        if binary_size is not None:
            values: Any = self._binary_values(data, binary_size, binary, datatype, shape, where)
        else:
            if data is None:
                raise InvalidInput(f'{where} has no "data"; send its values as a list of numbers, row by row')
            if not isinstance(data, list | np.ndarray):
                raise InvalidInput(f'{where}: "data" must be a list of numbers, got {json_kind(data)}')
            if binary:
                raise InvalidInput(
                    f"{len(binary)} bytes follow the JSON part of the body but no input has "
                    "parameters.binary_data_size; send JSON data or binary data, not both"
                )
            values = data
        features = self._features(values, where=where, shape=shape)
        outputs, binary_outputs = self._requested_outputs(body.get("outputs"), parameters)
        return ParsedRequest(features, request_id, outputs, binary_outputs)

    def decode_binary(self, body: bytes, header_value: str) -> ParsedRequest:
        """Validate a V2 request that uses the binary tensor extension (JSON part, then raw tensor bytes).

        Raises:
            InvalidInput: a bad ``inference-header-content-length``, a JSON part that is not valid, or binary
                data that does not match its declared size, datatype and shape.
        """
        json_length = parse_binary_header_length(header_value, len(body))
        header = parse_json(body[:json_length], what=f"JSON part of the binary request (first {json_length} bytes)")
        if isinstance(header, dict) and "inputs" not in header:
            raise InvalidInput(
                f'the JSON part of the binary request has no "inputs" (keys: {sorted(map(str, header))}); '
                f"{BINARY_HEADER} must be the length of a V2 request whose inputs carry parameters.binary_data_size"
            )
        return self.decode(header, binary=memoryview(body)[json_length:])

    def _check_model(self, name: Any, version: Any) -> None:
        """The body's model_name and model_version, as KServe's clients send them, must be the URL's."""
        for key, value in (("model_name", name), ("model_version", version)):
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f'"{key}" must be a string, got {json_kind(value)}')
        served = self._model_name
        if name is not None and name != served:
            raise InvalidInput(
                f'"model_name" {name!r:.80} in the request body does not match the model {served!r} of the URL; '
                f"send model_name {served!r} (or leave it out), or send the request to that model's URL"
            )
        if version is None or version == self._model_version:
            return
        if self._model_version is None:
            raise InvalidInput(
                f'"model_version" {version!r:.80} in the request body, but model {served!r} of the URL has no '
                "version; leave model_version out"
            )
        raise InvalidInput(
            f'"model_version" {version!r:.80} in the request body does not match version '
            f"{self._model_version!r} of model {served!r} (the URL's); send model_version "
            f"{self._model_version!r} (or leave it out)"
        )

    def _binary_values(
        self, data: Any, size: Any, binary: bytes | memoryview | None, datatype: str, shape: list[int], where: str
    ) -> np.ndarray:
        if data is not None:
            raise InvalidInput(f'{where} has both "data" and parameters.binary_data_size; send one of them')
        if type(size) is not int or size < 0:
            raise InvalidInput(f"{where}: parameters.binary_data_size must be a byte count, got {size!r}")
        if binary is None:
            raise InvalidInput(
                f"{where} has parameters.binary_data_size but the request has no binary part; send the header "
                f"{BINARY_HEADER}: <length of the JSON part> and the raw tensor bytes after the JSON"
            )
        if size != len(binary):
            raise InvalidInput(
                f"{where}: parameters.binary_data_size is {size} but {len(binary)} bytes follow the JSON "
                "part of the body (truncated or padded binary data?)"
            )
        return self._checks.decode_binary(binary, datatype, shape, where)

    def _requested_outputs(self, outputs: Any, parameters: dict) -> tuple[tuple[str, ...], frozenset[str]]:
        default_binary = parameters.get("binary_data_output", False)
        if not isinstance(default_binary, bool):
            raise InvalidInput(f"parameters.binary_data_output must be true or false, got {default_binary!r:.40}")
        if outputs is None or outputs == []:
            return OUTPUT_NAMES, frozenset(OUTPUT_NAMES) if default_binary else frozenset()
        if not isinstance(outputs, list):
            raise InvalidInput(f'"outputs" must be a list of {{"name": ...}} objects, got {json_kind(outputs)}')
        names: list[str] = []
        binary: set[str] = set()
        for i, output in enumerate(outputs):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise InvalidInput(f'outputs[{i}] must be an object with a "name" string, got {output!r:.80}')
            if extra := output.keys() - _OUTPUT_KEYS:
                raise InvalidInput(f"outputs[{i}] has unknown field(s) {quote_list(sorted(map(str, extra)))}")
            as_binary = _parameters(output.get("parameters"), where=f"outputs[{i}]").get("binary_data", default_binary)
            if not isinstance(as_binary, bool):
                raise InvalidInput(f"outputs[{i}].parameters.binary_data must be true or false, got {as_binary!r:.40}")
            names.append(output["name"])
            if as_binary:
                binary.add(output["name"])
        self._checks.output_names(names)
        return tuple(names), frozenset(binary)


_NO_PARAMETERS: dict = {}


def _parameters(value: Any, *, where: str) -> dict:
    if value is None:
        return _NO_PARAMETERS
    if not isinstance(value, dict):
        raise InvalidInput(f'{where}: "parameters" must be a JSON object, got {json_kind(value)}')
    return value
