"""The V2 gRPC front (KServe's ``inference.GRPCInferenceService``), and the gRPC server every gRPC front runs on.

``ModelInfer`` decodes the protobuf message itself (:mod:`~kfkit.serving.grpc_protocol`), scores, counts
and logs through the shared :class:`~kfkit.serving.dataplane.DataPlane`, and answers with a
ModelInferResponse built from numpy arrays, without KServe's InferRequest/InferResponse conversions or its
per-call logging interceptor. Bad requests end with the error's gRPC code (INVALID_ARGUMENT; NOT_FOUND
for another model) and a message that names the problem; the server stays up.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.server import GRPCServer

from kfkit.errors import InvalidInput
from kfkit.serving.grpc_protocol import GrpcDecoder

if TYPE_CHECKING:
    from kfkit.serving.dataplane import DataPlane

__all__ = ["KfkitInferenceServicer", "KfkitGRPCServer"]

_log = logging.getLogger("kfkit.serving")


class KfkitInferenceServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """Open Inference Protocol gRPC methods for one loaded model."""

    def __init__(self, plane: DataPlane) -> None:
        """Bind the service to a served model's data plane and fix the answers that never change."""
        self._plane = plane
        self._decode = GrpcDecoder(plane.checks).decode
        self._score = plane.score
        self._encoder = plane.encoder
        self._observe = plane.observe
        self._logs_payload = plane.payload_logger is not None
        self._name = plane.model_name
        self._version = plane.model_version or ""
        meta = plane.metadata()
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
        return pb.ServerReadyResponse(ready=self._plane.ready)

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
        return pb.ModelReadyResponse(ready=self._plane.ready)

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
                raise InvalidInput(self._not_served(request.model_name, request.model_version), status_code=404)
            parsed = self._decode(request)
            probabilities, labels = await self._score(parsed.features)
            response = self._encoder.grpc(parsed, probabilities, labels)
            if self._logs_payload:
                self._plane.log_as_v2(request.id or str(uuid.uuid4()), parsed, probabilities, labels)
            return response
        except InvalidInput as e:
            status = e.grpc_code
            await context.abort(getattr(grpc.StatusCode, status), str(e))
        except Exception as e:
            status = "INTERNAL"
            _log.exception("gRPC ModelInfer failed")
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error scoring the request: {e!r:.300}")
        finally:
            self._observe("grpc", status, time.perf_counter() - started)

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
    """KServe's gRPC server class, bound to ``host``, serving one kfkit gRPC front.

    The same class runs the V2 service and TF Serving's ``PredictionService`` (each on its own port), so
    both get the same message limits, binding and graceful stop.
    """

    def __init__(
        self,
        host: str,
        port: int,
        servicer: Any,
        *,
        max_message_bytes: int,
        grace_period: int = 30,
        add_servicer: Callable[[Any, aio.Server], None] = (
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server
        ),
        name: str = "gRPC",
    ) -> None:
        """Configure the server; :meth:`start` binds and serves on the running loop.

        Args:
            host: Interface to bind (KServe hard-codes [::]).
            port: gRPC port (0 picks a free one: see :attr:`bound_port` once started).
            servicer: The service to run.
            max_message_bytes: Largest request message (larger ones end RESOURCE_EXHAUSTED); also the
                response limit.
            grace_period: Seconds in-flight calls get on shutdown.
            add_servicer: The generated ``add_..._to_server`` function of the servicer's service.
            name: What the server serves, for the log line.
        """
        super().__init__(port, None, None, kwargs={}, grace_period=grace_period)
        self._host = host
        self._servicer = servicer
        self._max_message_bytes = max_message_bytes
        self._add_servicer = add_servicer
        self._name = name
        self.bound_port: int | None = None
        """The port bound, once the server started."""

    async def start(self, max_workers: int = 0) -> None:  # noqa: ARG002 (async handlers need no thread pool)
        """Bind and serve until stopped.

        Raises:
            ServingError: the port cannot be bound.
        """
        from kfkit.errors import ServingError

        self._server = aio.server(
            options=[
                ("grpc.max_send_message_length", self._max_message_bytes),
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
            ],
        )
        self._add_servicer(self._servicer, self._server)
        address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        try:
            self.bound_port = self._server.add_insecure_port(address)
        except RuntimeError as e:  # grpc raises RuntimeError when it cannot bind
            raise ServingError(f"cannot serve {self._name} on {address}: {e}; pick another port") from e
        _log.info("kfkit: %s server on %s", self._name, address)
        await self._server.start()
        await self._server.wait_for_termination()
