"""Response encodings: scores to V1 JSON, V2 JSON or binary, V2 gRPC messages and CloudEvents, built directly.

The server answers without pydantic or KServe's InferResponse round trips: orjson writes numpy arrays
as they are, and the parts that never change (model name and version) are fixed once per model.
"""

from __future__ import annotations

import datetime
import itertools
import os
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from kfkit.model.names import INPUT_NAME, LABEL, PROBABILITY, V2_OUTPUTS
from kfkit.serving.cloudevents import CloudEventRequest
from kfkit.serving.tensors import ParsedRequest
from kfkit.serving.v2_protocol import BINARY_HEADER

if TYPE_CHECKING:
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferResponse

__all__ = ["ResponseEncoder", "error_body", "cloudevent_response"]

_DATATYPES = dict(V2_OUTPUTS)
_OUTPUT_DTYPES = {PROBABILITY: np.dtype("<f4"), LABEL: np.dtype("<i8")}
_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def error_body(message: str) -> bytes:
    """``{"error": message}`` as JSON bytes: the one error shape of every REST answer."""
    return orjson.dumps({"error": message})


class ResponseEncoder:
    """Builds the answers for one model version."""

    def __init__(self, model_name: str, model_version: str | None) -> None:
        """Fix the parts of every answer that never change."""
        self.model_name = model_name
        self.model_version = model_version
        # Ids for answers to requests that sent none: unique per process (random prefix) and far cheaper
        # than a uuid4 per request (one urandom syscall each).
        self._ids = map(f"{uuid.uuid4().hex[:12]}-{{:x}}".format, itertools.count(1))

    def v1(self, probabilities: np.ndarray, labels: np.ndarray) -> bytes:
        """``{"predictions": [{"probability": p, "label": y}, ...]}``."""
        probability, label = PROBABILITY, LABEL  # locals: read once per row below
        return orjson.dumps(
            {
                "predictions": [
                    {probability: p, label: y} for p, y in zip(probabilities.tolist(), labels.tolist(), strict=True)
                ]
            }
        )

    def v2_dict(self, request: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """The V2 JSON response as a dict (numpy arrays as data; binary outputs are left out)."""
        arrays = {PROBABILITY: probabilities, LABEL: labels}
        outputs = []
        for name in request.outputs:
            array = arrays[name]
            output: dict[str, Any] = {"name": name, "datatype": _DATATYPES[name], "shape": [len(array)]}
            if name in request.binary_outputs:
                output["parameters"] = {"binary_data_size": array.size * _OUTPUT_DTYPES[name].itemsize}
            else:
                output["data"] = array
            outputs.append(output)
        return {
            "model_name": self.model_name,
            "model_version": self.model_version,
            "id": request.request_id or next(self._ids),
            "outputs": outputs,
        }

    def v2(self, request: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> tuple[bytes, int | None]:
        """The V2 REST response body, and the JSON length when binary outputs follow the JSON part.

        Returns:
            ``(body, None)`` for plain JSON; ``(body, json_length)`` for the binary extension (send
            ``json_length`` as the ``inference-header-content-length`` header).
        """
        header = orjson.dumps(self.v2_dict(request, probabilities, labels), option=_NUMPY)
        if not request.binary_outputs:
            return header, None
        arrays = {PROBABILITY: probabilities, LABEL: labels}
        raw = [
            arrays[name].astype(_OUTPUT_DTYPES[name], copy=False).tobytes()
            for name in request.outputs
            if name in request.binary_outputs
        ]
        return b"".join([header, *raw]), len(header)

    def grpc(self, request: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> ModelInferResponse:
        """The gRPC ``ModelInferResponse``: raw output bytes when the request came raw, else typed contents."""
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        arrays = {PROBABILITY: probabilities, LABEL: labels}
        outputs, raw = [], []
        for name in request.outputs:
            array = arrays[name]
            tensor = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=_DATATYPES[name], shape=[len(array)])
            if name in request.binary_outputs:
                raw.append(array.astype(_OUTPUT_DTYPES[name], copy=False).tobytes())
            elif name == PROBABILITY:
                tensor.contents.fp32_contents.extend(array.tolist())
            else:
                tensor.contents.int64_contents.extend(array.tolist())
            outputs.append(tensor)
        return pb.ModelInferResponse(
            model_name=self.model_name,
            model_version=self.model_version or "",
            id=request.request_id or next(self._ids),
            outputs=outputs,
            raw_output_contents=raw,
        )

    def v2_request_json(self, request: ParsedRequest) -> bytes:
        """A V2 JSON request carrying the same batch (how a gRPC request is written to the payload log)."""
        features = request.features
        body: dict[str, Any] = {
            "inputs": [{"name": INPUT_NAME, "shape": list(features.shape), "datatype": "FP32", "data": features}]
        }
        if request.request_id:
            body["id"] = request.request_id
        return orjson.dumps(body, option=_NUMPY)

    def v2_response_json(self, request: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> bytes:
        """The all-JSON V2 response for this answer (binary outputs included as data), for the payload log."""
        everything = ParsedRequest(request.features, request.request_id, request.outputs, frozenset())
        return orjson.dumps(self.v2_dict(everything, probabilities, labels), option=_NUMPY)


def cloudevent_response(
    model_name: str, event: CloudEventRequest, body: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Wrap a JSON response body as a CloudEvent in the request's mode, as KServe does.

    Type and source follow KServe (``io.kserve.inference.response``, ``io.kserve.inference.<model>``; the
    ``CE_TYPE`` and ``CE_SOURCE`` environment variables override them); id and time are new.

    Returns:
        Response headers and body.
    """
    attributes = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": os.environ.get("CE_SOURCE", f"io.kserve.inference.{model_name}"),
        "type": os.environ.get("CE_TYPE", "io.kserve.inference.response"),
        "time": datetime.datetime.now(datetime.UTC).isoformat(),
    }
    if event.binary:
        headers = [(f"ce-{key}".encode(), str(value).encode()) for key, value in attributes.items()]
        return [*headers, (b"content-type", b"application/json")], body
    envelope = {**attributes, "datacontenttype": "application/json", "data": orjson.Fragment(body)}
    return [(b"content-type", b"application/cloudevents+json")], orjson.dumps(envelope)


def binary_headers(json_length: int | None) -> Sequence[tuple[bytes, bytes]]:
    """Content headers of a V2 REST answer (binary extension when ``json_length`` is set)."""
    if json_length is None:
        return ((b"content-type", b"application/json"),)
    return ((b"content-type", b"application/octet-stream"), (BINARY_HEADER.encode(), str(json_length).encode()))
