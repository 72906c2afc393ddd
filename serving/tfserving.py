"""The TensorFlow Serving gRPC front (``tensorflow.serving.PredictionService``) of the kfkit model server.

Existing TF Serving clients (``PredictionServiceStub.Predict`` with a ``features`` tensor) keep working
against kfkit: ``kfkit serve --tfserving-grpc-port 8500`` answers ``Predict`` and ``GetModelMetadata`` on
its own port, beside the KServe V1/V2 endpoints, for a model of any framework. ``Predict`` decodes the
TensorProto (:mod:`~kfkit.serving.tfserving_protocol`) and then takes the same path as every other front
(:class:`~kfkit.serving.dataplane.DataPlane`): the same tensor checks, the same batcher and in-memory model,
metrics under protocol ``tfserving-grpc``, and the payload log (as V2 JSON). Errors use TF Serving's status
codes: an unknown model name is NOT_FOUND, a bad input INVALID_ARGUMENT, and the Classify/Regress/
MultiInference methods are UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import grpc

from kfkit.errors import InvalidInput
from kfkit.model.names import SIGNATURE_NAME
from kfkit.serving.grpc_service import KfkitGRPCServer, Plain, Scored, rpc_handlers
from kfkit.serving.tfserving_protocol import TFServingCodec

if TYPE_CHECKING:
    from kfkit.serving.dataplane import DataPlane
    from kfkit.serving.grpc_service import Log
    from kfkit.serving.tensors import ParsedRequest

__all__ = ["PROTOCOL", "SERVICE", "PredictionService", "tfserving_server"]

PROTOCOL = "tfserving-grpc"
"""The ``protocol`` label of this front's requests in the server's metrics."""
SERVICE = "tensorflow.serving.PredictionService"


class PredictionService:
    """TF Serving's ``PredictionService`` (Predict, GetModelMetadata) for one served model.

    Its methods are served through :func:`~kfkit.serving.grpc_service.rpc_handlers`, like the V2 service's,
    on either gRPC stack; the TF Serving messages (which import tensorflow) are imported only in
    :meth:`handler`, when the server is built.
    """

    def __init__(self, plane: DataPlane, *, version: int | None = None) -> None:
        """Bind the service to a served model's data plane.

        Args:
            plane: The shared path to the loaded model.
            version: Version number clients see in ``model_spec.version`` (TF Serving's are integers);
                default: the served version when it is a number, else 1.
        """
        if version is None:
            served = plane.model_version or ""
            version = int(served) if served.isdigit() else 1
        self.plane = plane
        self._codec = TFServingCodec(plane.checks, model_name=plane.model_name, version=version)

    def handler(self, stack: str, loop: asyncio.AbstractEventLoop) -> grpc.GenericRpcHandler:
        """Every method of ``PredictionService`` for ``stack`` (``sync`` or ``aio``) on the server's ``loop``."""
        from tensorflow_serving.apis import (
            classification_pb2,
            get_model_metadata_pb2,
            inference_pb2,
            predict_pb2,
            regression_pb2,
        )

        plain: dict[str, Plain] = {
            "GetModelMetadata": (
                self._codec.metadata,
                get_model_metadata_pb2.GetModelMetadataRequest,
                get_model_metadata_pb2.GetModelMetadataResponse,
            ),
            "Classify": (
                _unimplemented("Classify"), classification_pb2.ClassificationRequest,
                classification_pb2.ClassificationResponse,
            ),
            "Regress": (_unimplemented("Regress"), regression_pb2.RegressionRequest, regression_pb2.RegressionResponse),
            "MultiInference": (
                _unimplemented("MultiInference"), inference_pb2.MultiInferenceRequest,
                inference_pb2.MultiInferenceResponse,
            ),
        }  # fmt: skip
        predict = Scored(PROTOCOL, self._codec.decode, self._answer, predict_pb2.PredictRequest,
                         predict_pb2.PredictResponse, "Predict")  # fmt: skip
        return rpc_handlers(SERVICE, stack, self.plane, loop, plain, {"Predict": predict})

    def _answer(self, _request: Any, parsed: ParsedRequest, probabilities: Any, labels: Any, log: Log | None) -> Any:
        """``probability`` and ``label`` (or those in ``output_filter``); the pair queued as V2 JSON."""
        response = self._codec.encode(parsed, probabilities, labels)
        if log is not None:
            log(str(uuid.uuid4()), parsed, probabilities, labels)
        return response


def tfserving_server(
    plane: DataPlane,
    host: str,
    port: int,
    *,
    max_message_bytes: int,
    grace_period: int = 30,
    stack: str = "sync",
    threads: int = 8,
) -> KfkitGRPCServer:
    """The gRPC server answering TF Serving's API for ``plane``'s model (started with ``await server.start()``).

    Args:
        plane: The shared path to the loaded model.
        host: Interface to bind (``127.0.0.1``; ``0.0.0.0`` for remote clients).
        port: TCP port (TF Serving's own default is 8500); 0 picks a free one.
        max_message_bytes: Largest request and response message.
        grace_period: Seconds in-flight calls get on shutdown.
        stack: ``sync`` (grpcio's thread-pool server) or ``aio`` (grpc.aio).
        threads: ``sync``: handler threads.
    """
    return KfkitGRPCServer(
        host,
        port,
        PredictionService(plane),
        max_message_bytes=max_message_bytes,
        grace_period=grace_period,
        stack=stack,
        threads=threads,
        name="TensorFlow Serving PredictionService",
    )


def _unimplemented(method: str) -> Any:
    def refuse(_request: Any) -> Any:
        raise InvalidInput(
            f"{method} is not offered; call Predict (signature {SIGNATURE_NAME!r})", status_code=405
        )  # 405: UNIMPLEMENTED, as TF Serving answers

    return refuse
