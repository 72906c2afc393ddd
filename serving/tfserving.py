"""The TensorFlow Serving gRPC API (``tensorflow.serving.PredictionService``) for a kfkit model.

Existing TF Serving clients (``PredictionServiceStub.Predict`` with a ``features`` tensor) keep working
against kfkit: this servicer answers ``Predict`` and ``GetModelMetadata`` for one model of any framework
(a TensorFlow SavedModel or a PyTorch MLP, through :func:`kfkit.model.load_scorer`), on its own port,
beside the KServe V1/V2 endpoints. Contract: input ``features`` float32 ``[N, n_features]``; outputs
``probability`` float32 ``[N]`` and ``label`` int64 ``[N]`` (at the model's threshold). Errors use TF
Serving's status codes: an unknown model name is NOT_FOUND, a bad input INVALID_ARGUMENT, and the
Classify/Regress/MultiInference methods are UNIMPLEMENTED.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tensorflow_serving's stubs import all of tensorflow: only where the service runs
    import grpc
    import numpy as np

    from kfkit.model import ModelSpec

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "SIGNATURE_NAME",
    "PredictionService",
    "start_prediction_service",
    "main",
]

INPUT_NAME = "features"
OUTPUT_NAMES = ("probability", "label")
SIGNATURE_NAME = "serving_default"
_PREDICT_METHOD = "tensorflow/serving/predict"
_DT_FLOAT, _DT_INT64 = 1, 9  # tensorflow.DataType enum values (types.proto)
_MAX_REPORTED = 3
_MAX_FILL = 1 << 22  # a single float_val may fill at most this many values (no huge allocation on request)


class _BadRequest(Exception):
    """A request the service answers with a gRPC error status (code, message)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PredictionService:
    """TF Serving's ``PredictionServiceServicer`` interface for one kfkit model (Predict, GetModelMetadata).

    A plain class rather than a subclass of the generated servicer, so that importing this module does not
    import tensorflow; ``add_PredictionServiceServicer_to_server`` only looks the five methods up by name.
    """

    def __init__(
        self,
        scorer: Callable[[np.ndarray], np.ndarray],
        spec: ModelSpec,
        *,
        model_name: str | None = None,
        version: int = 1,
    ) -> None:
        """Serve ``scorer`` under ``model_name``.

        Args:
            scorer: Rows x features (float32) to positive-class probabilities ``[rows]``, as from
                :func:`kfkit.model.load_scorer`.
            spec: The model's spec (feature names, threshold).
            model_name: Name clients put in ``model_spec.name`` (default: ``spec.name``).
            version: Version reported back in ``model_spec.version``.
        """
        self.scorer = scorer
        self.name = model_name or spec.name
        self.version = int(version)
        self.width = spec.input_dim
        self.feature_names = list(spec.feature_names)
        self.threshold = float(spec.threshold)

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (the RPC's name)
        """Score ``inputs['features']``; answer ``probability`` and ``label`` (or those in ``output_filter``)."""
        import grpc

        from kfkit.errors import InvalidInput

        try:
            return self._predict(request)
        except _BadRequest as e:
            context.abort(e.code, e.message)
        except InvalidInput as e:  # the scorer's own input checks
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """The ``serving_default`` SignatureDef: ``features`` [-1, n] float -> ``probability``, ``label``."""
        try:
            return self._metadata(request)
        except _BadRequest as e:
            context.abort(e.code, e.message)

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802, ARG002
        """Not offered: kfkit models have a predict signature only."""
        _unimplemented(context, "Classify")

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802, ARG002
        """Not offered: kfkit models have a predict signature only."""
        _unimplemented(context, "Regress")

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802, ARG002
        """Not offered: kfkit models have a predict signature only."""
        _unimplemented(context, "MultiInference")

    def _check_spec(self, model_spec: Any) -> None:
        import grpc

        if model_spec.name != self.name:
            raise _BadRequest(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: model {model_spec.name!r}; this server serves {self.name!r}",
            )
        if model_spec.HasField("version") and model_spec.version.value != self.version:
            raise _BadRequest(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {self.name!r} version {model_spec.version.value}; "
                f"the served version is {self.version} (or leave model_spec.version unset)",
            )
        if model_spec.signature_name not in ("", SIGNATURE_NAME):
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"Serving signature name: {model_spec.signature_name!r} not found; use {SIGNATURE_NAME!r}",
            )

    def _fill_spec(self, out: Any) -> None:
        out.name = self.name
        out.version.value = self.version
        out.signature_name = SIGNATURE_NAME

    def _predict(self, request: Any) -> Any:
        import grpc
        import numpy as np
        from tensorflow_serving.apis import predict_pb2

        self._check_spec(request.model_spec)
        if set(request.inputs) != {INPUT_NAME}:
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"expected exactly one input {INPUT_NAME!r} (float32 [N, {self.width}]), "
                f"got {sorted(request.inputs) or 'none'}",
            )
        wanted = list(request.output_filter) or list(OUTPUT_NAMES)
        if unknown := [name for name in wanted if name not in OUTPUT_NAMES]:
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"output_filter names unknown outputs {unknown}; the outputs are {list(OUTPUT_NAMES)}",
            )
        features = self._features(request.inputs[INPUT_NAME])
        probabilities = np.asarray(self.scorer(features), dtype=np.float32).reshape(-1)
        response = predict_pb2.PredictResponse()
        self._fill_spec(response.model_spec)
        arrays = {"probability": probabilities, "label": (probabilities >= self.threshold).astype(np.int64)}
        for name in wanted:
            _to_tensor_proto(arrays[name], response.outputs[name])
        return response

    def _features(self, tensor: Any) -> np.ndarray:
        import grpc
        import numpy as np

        where = f"input {INPUT_NAME!r}"
        if tensor.dtype != _DT_FLOAT:
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where} has dtype {_dtype_name(tensor.dtype)}; send DT_FLOAT "
                "(tf.make_tensor_proto(rows, dtype=tf.float32))",
            )
        shape = [d.size for d in tensor.tensor_shape.dim]
        if len(shape) != 2 or shape[1] != self.width or shape[0] < 1:
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where} has shape {shape}; send [N, {self.width}] with N >= 1 "
                f"(features {', '.join(self.feature_names[:2])}, ...)",
            )
        count = shape[0] * shape[1]
        if tensor.tensor_content:
            if len(tensor.tensor_content) != 4 * count:
                raise _BadRequest(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where}: tensor_content has {len(tensor.tensor_content)} bytes; shape {shape} "
                    f"needs {4 * count}",
                )
            values = np.frombuffer(tensor.tensor_content, dtype="<f4")
        else:
            values = np.asarray(tensor.float_val, dtype=np.float32)
            if values.size == 1 and 1 < count <= _MAX_FILL:  # TF's convention: one value fills the tensor
                values = np.full(count, values[0], dtype=np.float32)
            if values.size != count:
                raise _BadRequest(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"{where} has {values.size} float_val values; shape {shape} needs {count}",
                )
        features = values.reshape(shape).astype(np.float32, copy=True)
        bad = ~np.isfinite(features)
        if bad.any():
            spots = ", ".join(
                f"row {r} feature {self.feature_names[c]!r}" for r, c in np.argwhere(bad)[:_MAX_REPORTED].tolist()
            )
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{where} has {int(bad.sum())} NaN or infinite values ({spots}); send finite numbers",
            )
        return features

    def _metadata(self, request: Any) -> Any:
        import grpc
        from tensorflow.core.protobuf import meta_graph_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        self._check_spec(request.model_spec)
        if unknown := [f for f in request.metadata_field if f != "signature_def"]:
            raise _BadRequest(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"metadata_field {unknown} is not supported; ask for 'signature_def'",
            )
        signature = meta_graph_pb2.SignatureDef(method_name=_PREDICT_METHOD)
        _tensor_info(signature.inputs[INPUT_NAME], f"{INPUT_NAME}:0", _DT_FLOAT, [-1, self.width])
        _tensor_info(signature.outputs["probability"], "probability:0", _DT_FLOAT, [-1])
        _tensor_info(signature.outputs["label"], "label:0", _DT_INT64, [-1])
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        signature_map.signature_def[SIGNATURE_NAME].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        self._fill_spec(response.model_spec)
        response.metadata["signature_def"].Pack(signature_map)
        return response


def _unimplemented(context: grpc.ServicerContext, method: str) -> None:
    import grpc

    context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not offered; call Predict (signature 'serving_default')")


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


def start_prediction_service(
    scorer: Callable[[np.ndarray], np.ndarray],
    spec: ModelSpec,
    host: str,
    port: int,
    *,
    model_name: str | None = None,
    version: int = 1,
    max_workers: int = 4,
) -> grpc.Server:
    """Start the TF Serving PredictionService for one model and return the running ``grpc.Server``.

    The server runs on its own threads (it needs no event loop), so the KServe server can start it beside
    its own; stop it with ``server.stop(grace)``. The port it bound is ``server.kfkit_port`` (useful with 0).

    Args:
        scorer: Rows x features to probabilities, as from :func:`kfkit.model.load_scorer`.
        spec: The model's spec.
        host: Interface to bind (``127.0.0.1``; ``0.0.0.0`` for remote clients).
        port: TCP port; 0 picks a free one.
        model_name: Name clients ask for (default: ``spec.name``).
        version: Version number reported to clients.
        max_workers: Threads answering calls.

    Raises:
        ServingError: the port cannot be bound.
    """
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from kfkit.errors import ServingError

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="tfserving"))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(scorer, spec, model_name=model_name, version=version), server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpc raises RuntimeError when it cannot bind
        raise ServingError(f"cannot serve the TF Serving API on {address}: {e}; pick another port") from e
    if bound == 0:
        raise ServingError(f"cannot serve the TF Serving API on {address} (in use?); pick another port")
    server.start()
    server.kfkit_port = bound
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kfkit.serving.tfserving --model-uri URI --port 8500``: serve only the TF Serving API."""
    parser = argparse.ArgumentParser(
        prog="python -m kfkit.serving.tfserving",
        description="Serve a published kfkit model over the TensorFlow Serving gRPC PredictionService API.",
    )
    parser.add_argument("--model-uri", required=True, help="published version, file:///…/registry/<name>/<version>")
    parser.add_argument("--model-name", help="name clients use in model_spec.name (default: the stored name)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port (default 8500, TF Serving's)")
    args = parser.parse_args(argv)

    from kfkit.errors import KfkitError
    from kfkit.model import load_scorer
    from kfkit.registry import resolve

    try:
        model_dir = resolve(args.model_uri)
        scorer, spec = load_scorer(model_dir)
        server = start_prediction_service(scorer, spec, args.host, args.port, model_name=args.model_name)
    except KfkitError as e:
        print(f"{parser.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    print(f"TF Serving PredictionService for {args.model_name or spec.name} on {args.host}:{server.kfkit_port}")
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
