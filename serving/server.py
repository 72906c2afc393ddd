"""Entry point of the kfkit model server: verify a registry version, load it, serve it with KServe.

KServe's ModelServer runs the process (uvicorn, health and readiness routes, /metrics, signals); kfkit
puts a lean REST front (:mod:`kfkit.serving.rest`) before KServe's FastAPI app, its own V2 gRPC service
(:mod:`kfkit.serving.grpc_service`) in place of KServe's and, when asked, TF Serving's gRPC API
(:mod:`kfkit.serving.tfserving`). All of them share one :class:`~kfkit.serving.dataplane.DataPlane`: one
model in memory, one adaptive batcher on a worker thread, one set of metrics and one payload logger.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import kserve
from kserve import model_server
from kserve.logging import logger

from kfkit.config import SERVER_OPTIONS, ServingConfig, check_serving
from kfkit.config.serving import GRPC_STACKS
from kfkit.deploy.local import ensure_port_free
from kfkit.errors import ConfigError, KfkitError
from kfkit.registry import resolve
from kfkit.serving.dataplane import DataPlane
from kfkit.serving.predictor import KfkitPredictor

__all__ = ["build_parser", "main"]

PROG = "kfkit serve"
_DEFAULTS = ServingConfig()
_GIL_SWITCH_INTERVAL_S = 0.0005  # measured: p99 of a pass against a busy loop 389 us at 5 ms, 80 us at 0.5 ms

_EPILOG = """\
Routes (REST): POST /v1/models/<name>:predict, POST /v2/models/<name>/infer (JSON, the binary tensor
extension, or a CloudEvent), GET /v2/models/<name> (metadata), GET /v2/health/ready, GET /metrics
(Prometheus: kfkit_requests_total, kfkit_request_duration_seconds, kfkit_batch_rows, kfkit_forward_seconds,
kfkit_payload_log_events_total, kfkit_model_info). gRPC: inference.GRPCInferenceService on --grpc_port;
tensorflow.serving.PredictionService on --tfserving-grpc-port, if set. Every front scores through the same
checks, batcher, model, metrics and payload log.
A request that cannot be scored gets a 4xx with {"error": "..."} (gRPC: INVALID_ARGUMENT) naming the problem.
"""


def build_parser() -> argparse.ArgumentParser:
    """KServe's model-server options plus kfkit's (model, batching, body limit, payload logging)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a published kfkit model version over KServe V1, V2 REST and V2 gRPC.",
        epilog=_EPILOG,
        parents=[model_server.parser],
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--model-uri", required=True, help="published version, file:///…/registry/<name>/<version> (sha256-verified)"
    )
    # Same destination as KServe's --model_name, so the two spellings are one setting.
    parser.add_argument(
        "--model-name",
        dest="model_name",
        help="endpoint name in the URL paths (default: the name stored with the model)",
    )
    parser.set_defaults(model_name=None)  # KServe's --model_name defaults to "model"; ours to the stored name
    parser.add_argument(
        "--host", default="127.0.0.1", help="interface for REST and gRPC (0.0.0.0 to accept remote clients)"
    )
    parser.add_argument(
        "--num-threads",
        type=int,
        default=1,
        help="torch intra-op threads; one is fastest for the small batches of a small MLP, 0 keeps torch's default",
    )
    kfkit = parser.add_argument_group("kfkit serving (serving.* in the kfkit config)")
    kfkit.add_argument(
        "--max-batch-size",
        "--max_batch_size",
        dest="max_batch_size",
        type=int,
        default=_DEFAULTS.max_batch_size,
        help="adaptive batching: most rows one forward pass takes from concurrent requests (1 = no batching)",
    )
    kfkit.add_argument(
        "--max-batch-latency-ms",
        "--max_batch_latency_ms",
        dest="max_batch_latency_ms",
        type=float,
        default=_DEFAULTS.max_batch_latency_ms,
        help="adaptive batching: longest a request waits for others to join its batch (a lone request does not wait)",
    )
    kfkit.add_argument(
        "--max-body-bytes",
        "--max_body_bytes",
        dest="max_body_bytes",
        type=int,
        default=_DEFAULTS.max_body_bytes,
        help="largest REST request body (413 above it) and gRPC message (RESOURCE_EXHAUSTED above it)",
    )
    kfkit.add_argument(
        "--payload-log-url",
        "--payload_log_url",
        dest="payload_log_url",
        default=_DEFAULTS.payload_log_url,
        help="send each request/response pair as CloudEvents (KServe logger format) to this http(s) URL",
    )
    kfkit.add_argument(
        "--payload-log-queue-size",
        "--payload_log_queue_size",
        dest="payload_log_queue_size",
        type=int,
        default=_DEFAULTS.payload_log_queue_size,
        help="payload events buffered before new ones are dropped (and counted) rather than slow predictions",
    )
    kfkit.add_argument(
        "--grpc-stack",
        "--grpc_stack",
        dest="grpc_stack",
        choices=GRPC_STACKS,
        default=_DEFAULTS.grpc_stack,
        help="grpcio server under the gRPC fronts: sync (thread pool; the cheaper per call) or aio (grpc.aio)",
    )
    kfkit.add_argument(
        "--grpc-threads",
        "--grpc_threads",
        dest="grpc_threads",
        type=int,
        default=_DEFAULTS.grpc_threads,
        help="sync gRPC stack: handler threads per gRPC front (also the most gRPC calls one forward pass merges)",
    )
    kfkit.add_argument(
        "--tfserving-grpc-port",
        "--tfserving_grpc_port",
        dest="tfserving_grpc_port",
        type=int,
        default=0,
        help="also answer TensorFlow Serving's gRPC PredictionService (Predict, GetModelMetadata) on this port, "
        "for existing TF Serving clients (0 = off; TF Serving's own default is 8500)",
    )
    kfkit.add_argument(
        "--access-log",
        action="store_true",
        help="log one line per HTTP request (off by default: a line per request costs throughput)",
    )
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help, and the epilog's line breaks kept."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT.

    Returns:
        0 after a clean shutdown; 1 if an option is invalid, the model cannot be verified or loaded, or a
        port is taken (one ``kfkit serve: error: ...`` line on stderr, no traceback).
    """
    args = build_parser().parse_args(argv)
    from kfkit.serving.metrics import ServerMetrics

    try:
        _check_options(args)
        ensure_port_free(args.host, args.http_port, "--http_port")
        if args.enable_grpc:
            ensure_port_free(args.host, args.grpc_port, "--grpc_port")
        if args.tfserving_grpc_port:
            ensure_port_free(args.host, args.tfserving_grpc_port, "--tfserving-grpc-port")
        model_dir = resolve(args.model_uri)
        model_name = args.model_name or _stored_name(model_dir)
        metrics = ServerMetrics(model_name)
        predictor = KfkitPredictor(
            model_name,
            model_dir,
            num_threads=args.num_threads or None,
            max_batch_size=args.max_batch_size,
            max_batch_latency_ms=args.max_batch_latency_ms,
            metrics=metrics,
        )
        predictor.load()
    except KfkitError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    metrics.model_info(
        version=predictor.model_version or "", framework=predictor.framework, digest=predictor.model_digest
    )
    payload_logger = None
    if args.payload_log_url:
        from kfkit.serving.payload_logger import PayloadLogger

        payload_logger = PayloadLogger(
            args.payload_log_url,
            model_name=model_name,
            model_version=predictor.model_version or "",
            queue_size=args.payload_log_queue_size,
            source=f"http://{args.host}:{args.http_port}/v2/models/{model_name}",
            metrics=metrics,
        )
    plane = DataPlane(predictor, metrics=metrics, payload_logger=payload_logger)
    server = _ModelServer(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,  # the batcher, metrics and payload queue live in this one process
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=False,  # the fast path does not go through KServe's per-stage timing
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        front=_Front(plane, args),
    )
    logger.info(
        "kfkit: serving %s version %s (%s) from %s on http://%s:%d%s%s; batches up to %d rows / %g ms, body limit "
        "%d bytes, payload log %s, gRPC stack %s",
        model_name,
        predictor.model_version,
        predictor.framework,
        model_dir,
        args.host,
        args.http_port,
        f" and grpc {args.host}:{args.grpc_port}" if args.enable_grpc else "",
        f" and tfserving-grpc {args.host}:{args.tfserving_grpc_port}" if args.tfserving_grpc_port else "",
        args.max_batch_size,
        args.max_batch_latency_ms,
        args.max_body_bytes,
        args.payload_log_url or "off",
        args.grpc_stack + (f" ({args.grpc_threads} threads)" if args.grpc_stack == "sync" else ""),
    )
    _use_uvloop(args.event_loop)
    # The worker thread needs the GIL back after every torch op; by default a thread waiting for it waits
    # up to 5 ms while the event loop keeps it, which is what a batch-1 pass's tail latency then looks like.
    sys.setswitchinterval(_GIL_SWITCH_INTERVAL_S)
    # torch, KServe and their imports leave ~300k long-lived objects; a full collection walks them all (~150 ms
    # on one core), a stall every few seconds under load. Freezing moves them out of the collector's way.
    gc.collect()
    gc.freeze()
    server.start([predictor])
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """The config's own bounds (kfkit.config.check_serving), named as the flags given by hand."""
    options = {name: getattr(args, name) for name in SERVER_OPTIONS}
    check_serving(ServingConfig(**options), key=lambda name: "--" + name.replace("_", "-"))
    if args.workers != 1:
        raise ConfigError(
            f"--workers={args.workers}: kfkit serves from one process (the batcher merges requests within it); "
            "run more replicas instead"
        )


def _use_uvloop(choice: str) -> None:
    """Run on uvloop unless ``--event-loop asyncio`` (KServe's asyncio.run ignores uvicorn's loop setting)."""
    if choice == "asyncio":
        return
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            logger.warning("kfkit: --event-loop uvloop requested but uvloop is not installed; using asyncio")
        return
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # KServe's setup_event_loop asks for the current loop before asyncio.run makes the real one; uvloop's
    # policy, unlike asyncio's, does not make one on demand.
    asyncio.set_event_loop(asyncio.new_event_loop())


def _stored_name(model_dir: Path) -> str:
    """The model name recorded in the version's manifest (what `kfkit run` published it as)."""
    from kfkit.registry import MANIFEST_FILE

    return json.loads((model_dir / MANIFEST_FILE).read_text())["name"]


class _Front:
    """What the server puts in front of KServe: the shared data plane and the fronts' settings."""

    def __init__(self, plane: DataPlane, args: argparse.Namespace) -> None:
        self.plane = plane
        self.max_body_bytes: int = args.max_body_bytes
        self.access_log: bool = args.access_log
        self.tfserving_port: int = args.tfserving_grpc_port
        self.grpc = {"stack": args.grpc_stack, "threads": args.grpc_threads}


class _ModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` listening on one interface, with kfkit's REST front and gRPC services.

    KServe 0.20 hard-codes 0.0.0.0 for REST and [::] for gRPC; a laptop server should not be reachable
    from the network by default. Both servers bind only when the event loop runs, so the addresses and
    the ASGI app can still be changed in ``setup_event_loop``, the last hook ``start()`` calls before
    ``asyncio.run``.
    """

    def __init__(self, *, host: str, front: _Front, enable_grpc: bool = True, **kwargs) -> None:
        self._host = host
        self._front = front
        self._serve_grpc = enable_grpc
        self._kfkit_grpc: list = []  # kfkit's gRPC servers (V2, TF Serving), stopped before the model unloads
        super().__init__(enable_grpc=False, **kwargs)  # we add our own gRPC server in setup_event_loop

    def setup_event_loop(self) -> None:
        from kfkit.serving.grpc_service import KfkitGRPCServer, KfkitInferenceServicer
        from kfkit.serving.http_protocol import protocol_class
        from kfkit.serving.rest import RestFront, install_error_handlers

        front, plane = self._front, self._front.plane
        rest = self._rest_server
        install_error_handlers(model_server.app)
        rest.config.host = self._host
        # Bytes that are not HTTP get kfkit's JSON 4xx (and a count) instead of uvicorn's plain-text 400.
        # uvicorn reads `http` when the server loads its config, which happens after this hook.
        rest.config.http = protocol_class(on_rejected=plane.metrics.rejected)
        # X-Forwarded-For only matters to access-log lines; without them, skip the per-request rewrite.
        rest.config.proxy_headers = front.access_log
        rest.config.app = RestFront(model_server.app, plane, max_body_bytes=front.max_body_bytes)
        if not front.access_log:
            access = logging.getLogger("uvicorn.access")
            access.handlers = []
            access.propagate = False  # uvicorn formats an access line whenever a handler is reachable
        limits = {"max_message_bytes": front.max_body_bytes, "grace_period": self.grace_period, **front.grpc}
        if self._serve_grpc:
            servicer = KfkitInferenceServicer(plane)
            self._kfkit_grpc.append(KfkitGRPCServer(self._host, self.grpc_port, servicer, **limits))
        if front.tfserving_port:
            from kfkit.serving.tfserving import tfserving_server

            self._kfkit_grpc.append(tfserving_server(plane, self._host, front.tfserving_port, **limits))
        self.servers += [server.start() for server in self._kfkit_grpc]
        super().setup_event_loop()

    def stop(self, sig: int) -> None:
        """Graceful stop (SIGTERM/SIGINT, on the event loop's thread): in-flight gRPC calls finish first.

        KServe's own stop unloads the model at once, which would fail every gRPC call still waiting for its
        batch; so the gRPC servers stop first (new calls refused, in-flight ones answered within the grace
        period), and KServe's stop follows. uvicorn has already drained REST when this runs.
        """
        if not self._kfkit_grpc:
            super().stop(sig)
            return

        async def drain_then_stop() -> None:
            await asyncio.gather(*(server.stop(sig) for server in self._kfkit_grpc))
            kserve.ModelServer.stop(self, sig)

        self._draining = asyncio.create_task(drain_then_stop())  # kept: a task without a reference may vanish


if __name__ == "__main__":
    sys.exit(main())
