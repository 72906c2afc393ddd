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

import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

import grpc

from kfkit.errors import InvalidInput
from kfkit.model.names import SIGNATURE_NAME
from kfkit.serving.grpc_service import KfkitGRPCServer
from kfkit.serving.tfserving_protocol import TFServingCodec

if TYPE_CHECKING:
    from grpc import aio

    from kfkit.serving.dataplane import DataPlane

__all__ = ["PROTOCOL", "PredictionService", "tfserving_server"]

PROTOCOL = "tfserving-grpc"
"""The ``protocol`` label of this front's requests in the server's metrics."""

_log = logging.getLogger("kfkit.serving")


class PredictionService:
    """TF Serving's ``PredictionServiceServicer`` interface (Predict, GetModelMetadata) for one served model.

    A plain class rather than a subclass of the generated servicer, so that importing this module does not
    import tensorflow; the generated ``add_PredictionServiceServicer_to_server`` only looks the five methods up by
    name.
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
        self._plane = plane
        self._codec = TFServingCodec(plane.checks, model_name=plane.model_name, version=version)
        self._score = plane.score
        self._observe = plane.observe
        self._logs_payload = plane.payload_logger is not None

    async def Predict(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802 (the RPC's name)
        """Score ``inputs['features']``; answer ``probability`` and ``label`` (or those in ``output_filter``)."""
        started = time.perf_counter()
        status = "OK"
        try:
            parsed = self._codec.decode(request)
            probabilities, labels = await self._score(parsed.features)
            response = self._codec.encode(parsed, probabilities, labels)
            if self._logs_payload:
                self._plane.log_as_v2(str(uuid.uuid4()), parsed, probabilities, labels)
            return response
        except InvalidInput as e:
            status = e.grpc_code
            await context.abort(getattr(grpc.StatusCode, status), str(e))
        except Exception as e:
            status = "INTERNAL"
            _log.exception("TF Serving Predict failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error scoring the request: {e!r:.300}")
        finally:
            self._observe(PROTOCOL, status, time.perf_counter() - started)

    async def GetModelMetadata(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802
        """The ``serving_default`` SignatureDef: ``features`` [-1, n] float -> ``probability``, ``label``."""
        try:
            return self._codec.metadata(request)
        except InvalidInput as e:
            await context.abort(getattr(grpc.StatusCode, e.grpc_code), str(e))

    async def Classify(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802, ARG002
        """Not offered: kfkit models have a predict signature only."""
        await _unimplemented(context, "Classify")

    async def Regress(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802, ARG002
        """Not offered: kfkit models have a predict signature only."""
        await _unimplemented(context, "Regress")

    async def MultiInference(self, request: Any, context: aio.ServicerContext) -> Any:  # noqa: N802, ARG002
        """Not offered: kfkit models have a predict signature only."""
        await _unimplemented(context, "MultiInference")


def tfserving_server(
    plane: DataPlane, host: str, port: int, *, max_message_bytes: int, grace_period: int = 30
) -> KfkitGRPCServer:
    """The gRPC server answering TF Serving's API for ``plane``'s model (started with ``await server.start()``).

    TF Serving's generated stubs import tensorflow: that happens here, before the server runs, not on the
    event loop.

    Args:
        plane: The shared path to the loaded model.
        host: Interface to bind (``127.0.0.1``; ``0.0.0.0`` for remote clients).
        port: TCP port (TF Serving's own default is 8500); 0 picks a free one.
        max_message_bytes: Largest request and response message.
        grace_period: Seconds in-flight calls get on shutdown.
    """
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return KfkitGRPCServer(
        host,
        port,
        PredictionService(plane),
        max_message_bytes=max_message_bytes,
        grace_period=grace_period,
        add_servicer=prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server,
        name="TensorFlow Serving PredictionService",
    )


async def _unimplemented(context: aio.ServicerContext, method: str) -> None:
    await context.abort(
        grpc.StatusCode.UNIMPLEMENTED, f"{method} is not offered; call Predict (signature {SIGNATURE_NAME!r})"
    )
