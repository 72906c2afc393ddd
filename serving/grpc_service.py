"""The V2 gRPC service (KServe's ``inference.GRPCInferenceService``) answered directly from the predictor.

Requests are validated from the protobuf message itself and answered with a ModelInferResponse built
from numpy arrays, without KServe's InferRequest/InferResponse conversions or its per-call logging
interceptor. Bad requests end with INVALID_ARGUMENT (NOT_FOUND for another model) and a message that names
the problem; the server stays up.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.server import GRPCServer

from kfkit.serving.validation import RequestError

if TYPE_CHECKING:
    from kfkit.serving.metrics import ServerMetrics
    from kfkit.serving.payload_logger import PayloadLogger
    from kfkit.serving.predictor import KfkitPredictor

__all__ = ["KfkitInferenceServicer", "KfkitGRPCServer"]

_log = logging.getLogger("kfkit.serving")


class KfkitInferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol gRPC methods for one loaded model."""

    def __init__(
        self, predictor: KfkitPredictor, *, metrics: ServerMetrics, payload_logger: PayloadLogger | None = None
    ) -> None:
        """Bind the service to a loaded predictor and fix the answers that never change."""
        self._predictor = predictor
        self._validator = predictor.validator
        self._encoder = predictor.encoder
        self._metrics = metrics
        self._payload = payload_logger
        self._name = predictor.name
        self._version = predictor.model_version or ""
        meta = predictor.metadata()
        tensor = pb.ModelMetadataResponse.TensorMetadata
        self._model_metadata = pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[tensor(**t) for t in meta["inputs"]],
            outputs=[tensor(**t) for t in meta["outputs"]],
        )
        from importlib import metadata

        self._server_metadata = pb.ServerMetadataResponse(name="kserve", version=metadata.version("kserve"))

    async def ServerLive(self, request: pb.ServerLiveRequest, context: aio.ServicerContext) -> pb.ServerLiveResponse:  # noqa: N802, ARG002
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: aio.ServicerContext) -> pb.ServerReadyResponse:  # noqa: N802, ARG002
        """Ready while the model is loaded."""
        return pb.ServerReadyResponse(ready=self._predictor.ready)

    async def ServerMetadata(  # noqa: N802
        self,
        request: pb.ServerMetadataRequest,  # noqa: ARG002
        context: aio.ServicerContext,  # noqa: ARG002
    ) -> pb.ServerMetadataResponse:
        """Server name and version."""
        return self._server_metadata

    async def ModelReady(self, request: pb.ModelReadyRequest, context: aio.ServicerContext) -> pb.ModelReadyResponse:  # noqa: N802
        """Whether the named model (and version) is ready; NOT_FOUND for another model."""
        await self._check_model(request.name, request.version, context)
        return pb.ModelReadyResponse(ready=self._predictor.ready)

    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        """Input and output tensors of the model; NOT_FOUND for another model."""
        await self._check_model(request.name, request.version, context)
        return self._model_metadata

    async def ModelInfer(self, request: pb.ModelInferRequest, context: aio.ServicerContext) -> pb.ModelInferResponse:  # noqa: N802
        """Score one request; INVALID_ARGUMENT with the reason when it cannot be scored."""
        started = time.perf_counter()
        status = "OK"
        try:
            if request.model_name != self._name or (request.model_version and request.model_version != self._version):
                raise RequestError(self._not_served(request.model_name, request.model_version), status_code=404)
            parsed = self._validator.grpc(request)
            probabilities, labels = await self._predictor.score(parsed.features)
            response = self._encoder.grpc(parsed, probabilities, labels)
            if self._payload is not None:
                encoder = self._encoder
                self._payload.log(
                    event_id=request.id or str(uuid.uuid4()),
                    content_type="application/json",
                    request=lambda: encoder.v2_request_json(parsed),
                    response=lambda: encoder.v2_response_json(parsed, probabilities, labels),
                )
            return response
        except RequestError as e:
            status = e.grpc_status
            await context.abort(getattr(grpc.StatusCode, status), str(e))
        except Exception as e:
            status = "INTERNAL"
            _log.exception("gRPC ModelInfer failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error scoring the request: {e!r:.300}")
        finally:
            self._metrics.request("grpc", status, time.perf_counter() - started)

    async def RepositoryModelLoad(self, request, context: aio.ServicerContext):  # noqa: N802, ARG002
        """Refused: the server serves one verified version."""
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, self._repository_refusal())

    async def RepositoryModelUnload(self, request, context: aio.ServicerContext):  # noqa: N802, ARG002
        """Refused: the server serves one verified version."""
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, self._repository_refusal())

    async def _check_model(self, name: str, version: str, context: aio.ServicerContext) -> None:
        if name != self._name or (version and version != self._version):
            await context.abort(grpc.StatusCode.NOT_FOUND, self._not_served(name, version))

    def _not_served(self, name: str, version: str) -> str:
        wanted = repr(name) + (f" version {version}" if version else "")
        served = repr(self._name) + (f" version {self._version}" if self._version else "")
        return f"model {wanted} is not served here; this server serves model {served} (set model_name={self._name!r})"

    def _repository_refusal(self) -> str:
        return (
            f"loading and unloading models is disabled: this server serves model {self._name!r} version "
            f"{self._version or '?'} (sha256-verified at start); to serve another version, deploy it"
        )


class KfkitGRPCServer(GRPCServer):
    """KServe's gRPC server class, bound to ``host``, serving :class:`KfkitInferenceServicer`."""

    def __init__(
        self,
        host: str,
        port: int,
        servicer: KfkitInferenceServicer,
        *,
        max_message_bytes: int,
        grace_period: int = 30,
    ) -> None:
        """Configure the server; :meth:`start` binds and serves on the running loop.

        Args:
            host: Interface to bind (KServe hard-codes [::]).
            port: gRPC port.
            servicer: The service to run.
            max_message_bytes: Largest request message (larger ones end RESOURCE_EXHAUSTED); also the
                response limit.
            grace_period: Seconds in-flight calls get on shutdown.
        """
        super().__init__(port, None, None, kwargs={}, grace_period=grace_period)
        self._host = host
        self._servicer = servicer
        self._max_message_bytes = max_message_bytes

    async def start(self, max_workers: int) -> None:  # noqa: ARG002 (async handlers need no thread pool)
        """Bind and serve until stopped."""
        self._server = aio.server(
            options=[
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(self._servicer, self._server)
        address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        self._server.add_insecure_port(address)
        _log.info("kfkit: gRPC server on %s", address)
        await self._server.start()
        await self._server.wait_for_termination()
