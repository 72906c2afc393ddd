"""Entry point of the kfkit model server: verify a registry version, load it, serve it with KServe."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent import futures
from pathlib import Path

import kserve
from grpc import aio
from kserve import model_server
from kserve.logging import logger
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from kfkit.errors import KfkitError
from kfkit.registry import resolve
from kfkit.serving.local import ensure_port_free
from kfkit.serving.predictor import KfkitPredictor

__all__ = ["build_parser", "main"]

PROG = "kfkit serve"


def build_parser() -> argparse.ArgumentParser:
    """KServe's model-server options plus kfkit's (``--model-uri``, ``--model-name``, ``--host``, ``--num-threads``)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve a published kfkit model version over KServe V1, V2 REST and V2 gRPC.",
        parents=[model_server.parser],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM/SIGINT.

    Returns:
        0 after a clean shutdown; 1 if the model cannot be verified or loaded or a port is taken (one
        ``kfkit serve: error: ...`` line on stderr, no traceback).
    """
    args = build_parser().parse_args(argv)
    try:
        ensure_port_free(args.host, args.http_port, "--http_port")
        if args.enable_grpc:
            ensure_port_free(args.host, args.grpc_port, "--grpc_port")
        model_dir = resolve(args.model_uri)
        model_name = args.model_name or _stored_name(model_dir)
        predictor = KfkitPredictor(model_name, model_dir, num_threads=args.num_threads or None)
        predictor.load()
    except KfkitError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    server = _ModelServer(
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=args.workers,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
        grpc_options=vars(args),
    )
    logger.info(
        "kfkit: serving %s from %s on http://%s:%d%s",
        model_name,
        model_dir,
        args.host,
        args.http_port,
        f" and grpc {args.host}:{args.grpc_port}" if args.enable_grpc else "",
    )
    server.start([predictor])
    return 0


def _stored_name(model_dir: Path) -> str:
    """The model name recorded in the version's manifest (what `kfkit run` published it as)."""
    from kfkit.registry import MANIFEST_FILE

    return json.loads((model_dir / MANIFEST_FILE).read_text())["name"]


class _ModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` listening on one interface.

    KServe 0.20 hard-codes 0.0.0.0 for REST and [::] for gRPC; a laptop server should not be reachable
    from the network by default. Both servers bind only when the event loop runs, so the addresses can
    still be changed in ``setup_event_loop``, the last hook ``start()`` calls before ``asyncio.run``.
    """

    def __init__(self, *, host: str, enable_grpc: bool = True, grpc_options: dict | None = None, **kwargs) -> None:
        self._host = host
        self._serve_grpc = enable_grpc
        self._grpc_options = grpc_options or vars(model_server.args)
        super().__init__(enable_grpc=False, **kwargs)  # we add our own gRPC server in setup_event_loop

    def setup_event_loop(self) -> None:
        rest = self._rest_server or getattr(self._rest_multiprocess_server, "_rest_server", None)
        if rest is not None:
            rest.config.host = self._host
        if self._serve_grpc:
            self._grpc_server = _GRPCServer(
                self._host,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=self._grpc_options,
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        super().setup_event_loop()


class _GRPCServer(GRPCServer):
    """KServe's V2 gRPC server bound to ``host`` (``GRPCServer.start`` of kserve 0.20 with the address changed)."""

    def __init__(self, host: str, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._host = host

    async def start(self, max_workers: int) -> None:
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        self._server.add_insecure_port(address)
        logger.info("Starting gRPC server with %d workers on %s", max_workers, address)
        await self._server.start()
        await self._server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
