"""The gRPC floor: a bare grpc.aio V2 server that answers a constant, against kfkit's server, same load.

kfkit's V2 gRPC throughput is bounded by grpcio itself (its C core, poller thread and per-call Python
objects), not by kfkit's work per request. This measures that bound on this machine: a server that
deserializes each ModelInferRequest and returns a prebuilt ModelInferResponse (``bare_grpc_server.py``),
pinned to one core, loaded like `kfkit bench serve` loads kfkit (grpc.aio client, N calls in flight, pinned
to the other core), and kfkit's own server beside it, alternated. It prints req/s and server CPU µs per
request for each.

    .venv/bin/python -m scripts.bench.grpc_floor --batches 1,64 --concurrency 16 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from kfkit.deploy.local import free_port

from .fixtures import publish_model
from .load import run_grpc_closed
from .payloads import grpc_request
from .servers import kfkit_server, process_group_cpu_s, start_bare_grpc, start_servers
from .settings import BenchSettings

_SERVER_CPU, _CLIENT_CPU = 0, 1


def build_parser(prog: str = "python -m scripts.bench.grpc_floor") -> argparse.ArgumentParser:
    """The floor's options."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,64", help="rows per request, e.g. 1,64")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per server (medians reported)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the bare grpc.aio server and kfkit's, alternated; print a table."""
    args = build_parser().parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    os.sched_setaffinity(0, {_CLIENT_CPU})  # the load generator's core; servers go to _SERVER_CPU
    with tempfile.TemporaryDirectory(prefix="kfkit-grpc-floor-") as tmp:
        work = Path(tmp)
        model = publish_model(work)
        settings = BenchSettings(server_cpu=_SERVER_CPU, client_cpu=_CLIENT_CPU)
        kfkit = kfkit_server("kfkit", model, settings, work)
        try:
            start_servers([kfkit], _SERVER_CPU, lambda _message: None)
            print("| server | batch | req/s (median) | server µs/req | runs |")
            print("|---|---|---|---|---|")
            for batch in batches:
                request = grpc_request(model.rows[:batch])
                port = free_port()
                bare = start_bare_grpc(port, batch, _SERVER_CPU)
                try:
                    targets = {"bare grpc.aio": (f"127.0.0.1:{port}", bare.pid), "kfkit": (kfkit.grpc_target, None)}
                    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
                    for _ in range(args.repeats):
                        for name, (target, pid) in targets.items():
                            cpu0 = kfkit.cpu_s() if pid is None else process_group_cpu_s(pid)
                            result = run_grpc_closed(
                                target, request, concurrency=args.concurrency, duration_s=args.duration
                            )
                            cpu = (kfkit.cpu_s() if pid is None else process_group_cpu_s(pid)) - cpu0
                            runs[name].append((result.req_per_s, cpu * 1e6 / max(result.requests, 1)))
                            time.sleep(0.2)
                    for name, values in runs.items():
                        rates = [r for r, _ in values]
                        cpu_us = statistics.median(c for _, c in values)
                        shown = ", ".join(f"{r:,.0f}" for r in rates)
                        print(f"| {name} | {batch} | {statistics.median(rates):,.0f} | {cpu_us:,.0f} | {shown} |")
                finally:
                    bare.terminate()
                    bare.wait(timeout=10)
        finally:
            kfkit.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
