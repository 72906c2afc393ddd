"""TensorFlow Serving's ``PredictionService`` messages: a ``PredictRequest`` decoded and checked, answers encoded.

Contract: input ``features`` float32 ``[N, n_features]`` (``tensor_content`` or ``float_val``); outputs
``probability`` float32 ``[N]`` and ``label`` int64 ``[N]``, or those in ``output_filter``; signature
``serving_default``. The values end in the shared :class:`~kfkit.serving.tensors.TensorChecks`. A model
name or version that is not served is a 404 :class:`~kfkit.errors.InvalidInput` (gRPC NOT_FOUND, as TF
Serving answers), anything else a 400 (INVALID_ARGUMENT). The protobuf modules import tensorflow, so they
are imported only where a request is handled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.model.names import INPUT_NAME, LABEL, OUTPUT_NAMES, PROBABILITY, SIGNATURE_NAME
from kfkit.serving.tensors import ParsedRequest, TensorChecks

__all__ = ["TFServingCodec"]

_PREDICT_METHOD = "tensorflow/serving/predict"
_DT_FLOAT, _DT_INT64 = 1, 9  # tensorflow.DataType enum values (types.proto)
_MAX_FILL = 1 << 22  # a single float_val may fill at most this many values (no huge allocation on request)


class TFServingCodec:
    """``PredictRequest`` to :class:`ParsedRequest` and scores to ``PredictResponse``, for one served model."""

    def __init__(self, checks: TensorChecks, *, model_name: str, version: int) -> None:
        """Decode for the model whose tensor ``checks`` these are, served as ``model_name`` version ``version``."""
        self._checks = checks
        self.model_name = model_name
        self.version = int(version)
        self._width = checks.n_features

    def check_spec(self, model_spec: Any) -> None:
        """The ``model_spec`` must name the served model (and version, if set) and its one signature.

        Raises:
            InvalidInput: 404 for another model or version, 400 for another signature.
        """
        if model_spec.name != self.model_name:
            raise InvalidInput(
                f"Servable not found for request: model {model_spec.name!r}; this server serves {self.model_name!r}",
                status_code=404,
            )
        if model_spec.HasField("version") and model_spec.version.value != self.version:
            raise InvalidInput(
                f"Servable not found for request: {self.model_name!r} version {model_spec.version.value}; "
                f"the served version is {self.version} (or leave model_spec.version unset)",
                status_code=404,
            )
        if model_spec.signature_name not in ("", SIGNATURE_NAME):
            raise InvalidInput(
                f"Serving signature name: {model_spec.signature_name!r} not found; use {SIGNATURE_NAME!r}"
            )

    def decode(self, request: Any) -> ParsedRequest:
        """Validate a ``PredictRequest``: the model spec, the one input, the output filter.

        Raises:
            InvalidInput: the request names another model, or cannot be scored.
        """
        self.check_spec(request.model_spec)
        inputs = request.inputs
        if len(inputs) != 1 or INPUT_NAME not in inputs:
            raise InvalidInput(
                f"expected exactly one input {INPUT_NAME!r} (float32 [N, {self._width}]), "
                f"got {sorted(inputs) or 'none'}"
            )
        outputs = OUTPUT_NAMES
        if request.output_filter:
            outputs = tuple(dict.fromkeys(request.output_filter))
            if unknown := [name for name in outputs if name not in OUTPUT_NAMES]:
                raise InvalidInput(
                    f"output_filter names unknown outputs {unknown}; the outputs are {list(OUTPUT_NAMES)}"
                )
        return ParsedRequest(self._features(inputs[INPUT_NAME]), None, outputs)

    def encode(self, request: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> Any:
        """The ``PredictResponse``: the requested outputs as packed tensors, and the served model spec."""
        from tensorflow_serving.apis import predict_pb2

        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec)
        arrays = {PROBABILITY: probabilities, LABEL: labels}
        for name in request.outputs:
            _to_tensor_proto(arrays[name], response.outputs[name])
        return response

    def metadata(self, request: Any) -> Any:
        """The ``GetModelMetadataResponse``: the ``serving_default`` SignatureDef.

        Raises:
            InvalidInput: another model (404), or metadata other than ``signature_def`` (400).
        """
        from tensorflow.core.protobuf import meta_graph_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        self.check_spec(request.model_spec)
        if unknown := [f for f in request.metadata_field if f != "signature_def"]:
            raise InvalidInput(f"metadata_field {unknown} is not supported; ask for 'signature_def'")
        signature = meta_graph_pb2.SignatureDef(method_name=_PREDICT_METHOD)
        _tensor_info(signature.inputs[INPUT_NAME], f"{INPUT_NAME}:0", _DT_FLOAT, [-1, self._width])
        _tensor_info(signature.outputs[PROBABILITY], f"{PROBABILITY}:0", _DT_FLOAT, [-1])
        _tensor_info(signature.outputs[LABEL], f"{LABEL}:0", _DT_INT64, [-1])
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        signature_map.signature_def[SIGNATURE_NAME].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec)
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def _features(self, tensor: Any) -> np.ndarray:
        """The ``features`` TensorProto as values of its declared shape, then the shared checks."""
        where = f"input {INPUT_NAME!r}"
        if tensor.dtype != _DT_FLOAT:
            raise InvalidInput(
                f"{where} has dtype {_dtype_name(tensor.dtype)}; send DT_FLOAT "
                "(tf.make_tensor_proto(rows, dtype=tf.float32))"
            )
        shape = [d.size for d in tensor.tensor_shape.dim]
        if len(shape) != 2 or shape[1] != self._width or shape[0] < 1:
            names = self._checks.feature_names
            raise InvalidInput(
                f"{where} has shape {shape}; send [N, {self._width}] with N >= 1 (features {', '.join(names[:2])}, ...)"
            )
        count = shape[0] * shape[1]
        if tensor.tensor_content:
            if len(tensor.tensor_content) != 4 * count:
                raise InvalidInput(
                    f"{where}: tensor_content has {len(tensor.tensor_content)} bytes; shape {shape} needs {4 * count}"
                )
            values = np.frombuffer(tensor.tensor_content, dtype="<f4")
        else:
            values = np.asarray(tensor.float_val, dtype=np.float32)
            if values.size == 1 and 1 < count <= _MAX_FILL:  # TF's convention: one value fills the tensor
                values = np.full(count, values[0], dtype=np.float32)
            if values.size != count:
                raise InvalidInput(f"{where} has {values.size} float_val values; shape {shape} needs {count}")
        return self._checks.features(values, where=where, shape=shape)

    def _fill_spec(self, out: Any) -> None:
        out.name = self.model_name
        out.version.value = self.version
        out.signature_name = SIGNATURE_NAME


def _dtype_name(dtype: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(dtype)
    except ValueError:
        return str(dtype)


def _tensor_info(info: Any, name: str, dtype: int, shape: Sequence[int]) -> None:
    info.name = name
    info.dtype = dtype
    for size in shape:
        info.tensor_shape.dim.add(size=size)


def _to_tensor_proto(array: np.ndarray, out: Any) -> None:
    """Fill a TensorProto as ``tf.make_tensor_proto`` would (packed ``tensor_content``), without TF ops."""
    out.dtype = _DT_FLOAT if array.dtype.kind == "f" else _DT_INT64
    for size in array.shape:
        out.tensor_shape.dim.add(size=size)
    out.tensor_content = array.astype("<f4" if out.dtype == _DT_FLOAT else "<i8").tobytes()
