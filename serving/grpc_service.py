"""The V2 gRPC front (KServe's ``inference.GRPCInferenceService``), and the gRPC server every gRPC front runs on.

``ModelInfer`` decodes the protobuf message itself (:mod:`~kfkit.serving.grpc_protocol`), scores, counts
and logs through the shared :class:`~kfkit.serving.dataplane.DataPlane`, and answers with a
ModelInferResponse built from numpy arrays, without KServe's InferRequest/InferResponse conversions or its
per-call interceptors. Bad requests end with the error's gRPC code (INVALID_ARGUMENT; NOT_FOUND for another
model) and a message that names the problem; the server stays up.

The server runs on one of two grpcio stacks (``serving.grpc_stack``): ``sync``, grpcio's thread-pool server
(the default: per call it costs a third of what grpc.aio costs on one core, see docs/benchmarks.md), whose
handler threads score through the batcher's thread-side entry; or ``aio``, grpc.aio on the event loop. Both
serve the same methods from the same code (:func:`rpc_handlers`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import grpc
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from kfkit.config.serving import GRPC_STACKS
from kfkit.errors import InvalidInput
from kfkit.serving.grpc_protocol import GrpcDecoder, GrpcEncoder

if TYPE_CHECKING:
    from kfkit.serving.dataplane import DataPlane
    from kfkit.serving.tensors import ParsedRequest

__all__ = ["GRPC_STACKS", "KfkitInferenceServicer", "KfkitGRPCServer", "Plain", "Scored", "rpc_handlers"]

SERVICE = "inference.GRPCInferenceService"

_log = logging.getLogger("kfkit.serving")

Plain = tuple[Callable[[Any], Any], Any, Any]
"""A method answered without the model: (``request -> response``, request class, response class)."""
Log = Callable[[str, "ParsedRequest", Any, Any], None]


class Scored:
    """A method that scores: decode, then the batcher, then the answer; counted under ``protocol``."""

    def __init__(self, protocol: str, decode: Callable[[Any], ParsedRequest], answer: Callable[..., Any],
                 request_class: Any, response_class: Any, name: str) -> None:  # fmt: skip
        """Describe the method (``response_class`` None: ``answer`` returns the wire bytes itself).

        ``decode(request)`` checks the request; ``answer(request, parsed, probabilities, labels, log)`` builds
        the reply (and queues the payload pair with ``log`` when it is not None).
        """
        self.protocol, self.decode, self.answer, self.name = protocol, decode, answer, name
        self.request_class, self.response_class = request_class, response_class


class KfkitInferenceServicer:
    """Open Inference Protocol gRPC methods for one loaded model (:meth:`handler` serves them on a stack)."""

    def __init__(self, plane: DataPlane) -> None:
        """Bind the service to a served model's data plane and fix the answers that never change."""
        self.plane = plane
        self._decode = GrpcDecoder(plane.checks).decode
        self._encode = GrpcEncoder(plane.model_name, plane.model_version).encode
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

    def handler(self, stack: str, loop: asyncio.AbstractEventLoop) -> grpc.GenericRpcHandler:
        """Every method of the service, for ``stack`` (``sync`` or ``aio``) on the server's event ``loop``."""
        plain: dict[str, Plain] = {
            "ServerLive": (lambda _r: pb.ServerLiveResponse(live=True), pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": (
                lambda _r: pb.ServerReadyResponse(ready=self.plane.ready), pb.ServerReadyRequest, pb.ServerReadyResponse
            ),
            "ServerMetadata": (lambda _r: self._server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelReady": (self._model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ModelMetadata": (self._metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "RepositoryModelLoad": (
                self._refuse_repository, pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse
            ),
            "RepositoryModelUnload": (
                self._refuse_repository, pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse
            ),
        }  # fmt: skip
        # The answer is already wire bytes (GrpcEncoder): no response class, no serializer.
        infer = Scored("grpc", self._parse, self._answer, pb.ModelInferRequest, None, "ModelInfer")
        return rpc_handlers(SERVICE, stack, self.plane, loop, plain, {"ModelInfer": infer})

    def _parse(self, request: pb.ModelInferRequest) -> ParsedRequest:
        if request.model_name != self._name or (request.model_version and request.model_version != self._version):
            raise InvalidInput(self._not_served(request.model_name, request.model_version), status_code=404)
        return self._decode(request)

    def _answer(self, request: pb.ModelInferRequest, parsed: ParsedRequest, probabilities: Any, labels: Any,
                log: Log | None) -> bytes:  # fmt: skip
        response = self._encode(parsed, probabilities, labels)
        if log is not None:
            log(request.id or str(uuid.uuid4()), parsed, probabilities, labels)
        return response

    def _model_ready(self, request: pb.ModelReadyRequest) -> pb.ModelReadyResponse:
        self._check_model(request.name, request.version)
        return pb.ModelReadyResponse(ready=self.plane.ready)

    def _metadata(self, request: pb.ModelMetadataRequest) -> pb.ModelMetadataResponse:
        self._check_model(request.name, request.version)
        return self._model_metadata

    def _check_model(self, name: str, version: str) -> None:
        if name != self._name or (version and version != self._version):
            raise InvalidInput(self._not_served(name, version), status_code=404)

    def _not_served(self, name: str, version: str) -> str:
        wanted = repr(name) + (f" version {version}" if version else "")
        served = repr(self._name) + (f" version {self._version}" if self._version else "")
        return f"model {wanted} is not served here; this server serves model {served} (set model_name={self._name!r})"

    def _refuse_repository(self, _request: Any) -> Any:
        raise InvalidInput(
            f"loading and unloading models is disabled: this server serves model {self._name!r} version "
            f"{self._version or '?'} (sha256-verified at start); to serve another version, deploy it",
            status_code=403,
        )


def rpc_handlers(
    service: str,
    stack: str,
    plane: DataPlane,
    loop: asyncio.AbstractEventLoop,
    plain: dict[str, Plain],
    scored: dict[str, Scored],
) -> grpc.GenericRpcHandler:
    """The generic handler of one service on ``stack``: plain methods, and methods that score through ``plane``.

    Every method answers an :class:`~kfkit.errors.InvalidInput` with its gRPC code and message; a scored
    method answers anything else INTERNAL (logged) and counts every call in the plane's metrics. On the
    ``sync`` stack a handler runs on a pool thread: it scores with :meth:`DataPlane.score_blocking` and
    hands the payload pair to the event loop, where the payload logger lives.

    Raises:
        ValueError: ``stack`` is not one of :data:`GRPC_STACKS`.
    """
    if stack not in GRPC_STACKS:
        raise ValueError(f"grpc stack {stack!r} is not one of {', '.join(GRPC_STACKS)}")
    make_plain, make_scored = (_sync_plain, _sync_scored) if stack == "sync" else (_aio_plain, _aio_scored)
    log: Log | None = None
    if plane.payload_logger is not None:
        log = plane.log_as_v2 if stack == "aio" else (lambda *pair: loop.call_soon_threadsafe(plane.log_as_v2, *pair))
    methods = {
        name: grpc.unary_unary_rpc_method_handler(
            make_plain(call), request_deserializer=request.FromString, response_serializer=response.SerializeToString
        )
        for name, (call, request, response) in plain.items()
    }
    for name, method in scored.items():
        methods[name] = grpc.unary_unary_rpc_method_handler(
            make_scored(method, plane, log),
            request_deserializer=method.request_class.FromString,
            response_serializer=None if method.response_class is None else method.response_class.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service, methods)


def _code(error: InvalidInput) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, error.grpc_code)


def _internal(method: str, error: Exception) -> str:
    _log.exception("gRPC %s failed", method)
    return f"internal error scoring the request: {error!r:.300}"


def _sync_plain(call: Callable[[Any], Any]) -> Callable[[Any, grpc.ServicerContext], Any]:
    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return call(request)
        except InvalidInput as e:
            context.abort(_code(e), str(e))  # raises: grpc ends the call with this status

    return handle


def _aio_plain(call: Callable[[Any], Any]) -> Callable[..., Any]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return call(request)
        except InvalidInput as e:
            await context.abort(_code(e), str(e))

    return handle


def _sync_scored(method: Scored, plane: DataPlane, log: Log | None) -> Callable[[Any, grpc.ServicerContext], Any]:
    decode, answer, score, observe = method.decode, method.answer, plane.score_blocking, plane.observe
    protocol, clock = method.protocol, time.perf_counter

    def handle(request: Any, context: grpc.ServicerContext) -> Any:
        started, status = clock(), "OK"
        try:
            parsed = decode(request)
            probabilities, labels = score(parsed.features)
            return answer(request, parsed, probabilities, labels, log)
        except InvalidInput as e:
            status = e.grpc_code
            context.abort(_code(e), str(e))
        except Exception as e:
            status = "INTERNAL"
            context.abort(grpc.StatusCode.INTERNAL, _internal(method.name, e))
        finally:
            observe(protocol, status, clock() - started)

    return handle


def _aio_scored(method: Scored, plane: DataPlane, log: Log | None) -> Callable[..., Any]:
    decode, answer, score, observe = method.decode, method.answer, plane.score, plane.observe
    protocol, clock = method.protocol, time.perf_counter

    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started, status = clock(), "OK"
        try:
            parsed = decode(request)
            probabilities, labels = await score(parsed.features)
            return answer(request, parsed, probabilities, labels, log)
        except InvalidInput as e:
            status = e.grpc_code
            await context.abort(_code(e), str(e))
        except Exception as e:
            status = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, _internal(method.name, e))
        finally:
            observe(protocol, status, clock() - started)

    return handle


class KfkitGRPCServer:
    """A gRPC server bound to ``host`` serving one kfkit gRPC front, on the ``sync`` or ``aio`` stack.

    The same class runs the V2 service and TF Serving's ``PredictionService`` (each on its own port), so
    both get the same stack, message limits, binding and graceful stop.
    """

    def __init__(
        self,
        host: str,
        port: int,
        front: Any,
        *,
        max_message_bytes: int,
        grace_period: int = 30,
        stack: str = "sync",
        threads: int = 8,
        name: str = "gRPC",
    ) -> None:
        """Configure the server; :meth:`start` binds and serves.

        Args:
            host: Interface to bind.
            port: gRPC port (0 picks a free one: see :attr:`bound_port` once started).
            front: The service: an object whose ``handler(stack, loop)`` returns its generic RPC handler.
            max_message_bytes: Largest request message (larger ones end RESOURCE_EXHAUSTED); also the
                response limit.
            grace_period: Seconds in-flight calls get to finish on shutdown.
            stack: ``sync`` (grpcio's thread-pool server) or ``aio`` (grpc.aio on the event loop).
            threads: ``sync``: handler threads, so also the most calls one forward pass can merge.
            name: What the server serves, for the log line.

        Raises:
            ValueError: ``stack`` is not one of :data:`GRPC_STACKS`, or ``threads`` is below 1.
        """
        if stack not in GRPC_STACKS:
            raise ValueError(f"grpc stack {stack!r} is not one of {', '.join(GRPC_STACKS)}")
        if threads < 1:
            raise ValueError(f"threads={threads} must be at least 1")
        self._host, self._port, self._front = host, port, front
        self._max_message_bytes = max_message_bytes
        self._grace_period = grace_period
        self._stack, self._threads, self._name = stack, threads, name
        self._server: Any = None
        self._stopped: asyncio.Event | None = None
        self.bound_port: int | None = None
        """The port bound, once the server started."""

    async def start(self) -> None:
        """Bind and serve until :meth:`stop` has let the in-flight calls finish.

        Raises:
            ServingError: the port cannot be bound.
        """
        from kfkit.errors import ServingError

        options = [
            ("grpc.max_send_message_length", self._max_message_bytes),
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]
        loop = asyncio.get_running_loop()
        if self._stack == "sync":
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(self._threads, thread_name_prefix="kfkit-grpc")
            self._server = grpc.server(pool, options=options)
        else:
            from grpc import aio

            self._server = aio.server(options=options)
        self._server.add_generic_rpc_handlers((self._front.handler(self._stack, loop),))
        address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        try:
            self.bound_port = self._server.add_insecure_port(address)
        except RuntimeError as e:  # grpc raises RuntimeError when it cannot bind
            raise ServingError(f"cannot serve {self._name} on {address}: {e}; pick another port") from e
        _log.info("kfkit: %s server on %s (%s stack)", self._name, address, self._stack)
        self._stopped = asyncio.Event()
        if self._stack == "sync":
            self._server.start()
            await self._stopped.wait()
        else:
            await self._server.start()
            await self._server.wait_for_termination()

    async def stop(self, sig: int | None = None) -> None:  # noqa: ARG002 (KServe passes the signal)
        """Refuse new calls, let in-flight ones finish (up to the grace period), then end :meth:`start`."""
        if self._server is None:
            return
        _log.info("kfkit: stopping the %s server (in-flight calls get %s s)", self._name, self._grace_period)
        if self._stack == "sync":
            done = self._server.stop(grace=self._grace_period)  # a threading.Event, set once every call ended
            await asyncio.get_running_loop().run_in_executor(None, done.wait)
        else:
            await self._server.stop(grace=self._grace_period)
        if self._stopped is not None:
            self._stopped.set()
