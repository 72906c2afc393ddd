"""The gRPC floors: every Python gRPC server stack, answering a constant, beside kfkit's server, same load.

Each floor (``bare_grpc_server.py``: grpc.aio, grpc.aio on uvloop, grpc.aio with a raw-bytes handler, the
synchronous grpcio server with N threads, grpclib) deserializes each ModelInferRequest and returns a prebuilt
ModelInferResponse: what the stack alone costs per call. All run pinned to one core with the same request
bytes, loaded like `kfkit bench serve` loads kfkit (grpc.aio client, N calls in flight, pinned to the other
core), and kfkit's own server runs beside them on each of its gRPC stacks (``--kfkit-stacks``); every server
is run once per repeat, in turn (A/B/C/...), and the medians are printed: req/s and server CPU µs per request
(from /proc), with each one's ratio to the fastest floor.

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
from .servers import Server, kfkit_server, process_group_cpu_s, start_bare_grpc, start_servers
from .settings import BenchSettings

_SERVER_CPU, _CLIENT_CPU = 0, 1
STACKS = ("aio", "aio-uvloop", "aio-raw", "sync-1", "sync-4", "sync-8", "sync-16", "sync-4-max8", "grpclib")
"""The floors ``bare_grpc_server.py`` can run."""


def build_parser(prog: str = "python -m scripts.bench.grpc_floor") -> argparse.ArgumentParser:
    """The floor's options."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", default="1,64", help="rows per request, e.g. 1,64")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per server (medians reported)")
    parser.add_argument("--stacks", default=",".join(STACKS), help=f"floors to run, of {','.join(STACKS)}")
    parser.add_argument(
        "--kfkit-stacks",
        default="aio,sync",
        help="kfkit's server on each of these serving.grpc_stack values, sync-N for N threads (empty: none)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Measure the floors and kfkit's server, alternated; print a Markdown table."""
    args = build_parser().parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    stacks = [s for s in args.stacks.split(",") if s]
    if unknown := [s for s in stacks if s not in STACKS]:
        print(f"grpc_floor: error: unknown stacks {unknown}; choose from {','.join(STACKS)}", file=sys.stderr)
        return 2
    kfkit_stacks = [s for s in args.kfkit_stacks.split(",") if s]
    os.sched_setaffinity(0, {_CLIENT_CPU})  # the load generator's core; servers go to _SERVER_CPU
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="kfkit-grpc-floor-") as tmp:
        work = Path(tmp)
        model = publish_model(work)
        settings = BenchSettings(server_cpu=_SERVER_CPU, client_cpu=_CLIENT_CPU)
        kfkits: dict[str, Server] = {
            f"kfkit ({stack})": kfkit_server(f"kfkit-{stack}", model, settings, work, **_kfkit_options(stack))
            for stack in kfkit_stacks
        }
        try:
            start_servers(list(kfkits.values()), _SERVER_CPU, lambda _message: None)
            print("| server | batch | req/s (median) | server µs/req (median) | vs fastest floor | runs (req/s) |")
            print("|---|---|---|---|---|---|")
            for batch in batches:
                _measure_batch(batch, stacks, kfkits, model, args)
        finally:
            for server in kfkits.values():
                server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    return 0


def _kfkit_options(stack: str) -> dict[str, object]:
    """``aio``, ``sync`` or ``sync-N`` (N handler threads) as ``serving.*`` fields."""
    name, _, threads = stack.partition("-")
    return {"grpc_stack": name, **({"grpc_threads": int(threads)} if threads else {})}


def _measure_batch(batch: int, stacks: list[str], kfkits: dict[str, Server], model, args) -> None:
    """One batch size: start the floors, run every server once per repeat in turn, print the rows."""
    request = grpc_request(model.rows[:batch])
    bare = {}
    try:
        for stack in stacks:
            port = free_port()
            bare[stack] = (port, start_bare_grpc(port, batch, _SERVER_CPU, stack=stack))
        targets = {f"floor: {stack}": (f"127.0.0.1:{port}", process.pid) for stack, (port, process) in bare.items()}
        targets |= {name: (server.grpc_target, server.pid) for name, server in kfkits.items()}
        for target, _ in targets.values():  # warm-up: connections, first-call paths
            run_grpc_closed(target, request, concurrency=args.concurrency, duration_s=0.5)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        errors = dict.fromkeys(targets, 0)
        for _ in range(args.repeats):
            for name, (target, pid) in targets.items():
                cpu0 = process_group_cpu_s(pid)
                result = run_grpc_closed(target, request, concurrency=args.concurrency, duration_s=args.duration)
                cpu = process_group_cpu_s(pid) - cpu0
                errors[name] += result.errors
                # per answered call: refusals (RESOURCE_EXHAUSTED past maximum_concurrent_rpcs) are cheap
                runs[name].append((result.req_per_s, cpu * 1e6 / max(result.requests - result.errors, 1)))
                time.sleep(0.2)
        medians = {name: statistics.median(c for _, c in values) for name, values in runs.items()}
        # A floor that refused calls does not keep the contract (every call answered): not the reference.
        fastest = min(v for name, v in medians.items() if name.startswith("floor:") and not errors[name])
        for name, values in runs.items():
            rates = [r for r, _ in values]
            shown = ", ".join(f"{r:,.0f}" for r in rates) + (f"; {errors[name]:,} refused" if errors[name] else "")
            print(
                f"| {name} | {batch} | {statistics.median(rates):,.0f} | {medians[name]:,.0f} | "
                f"{medians[name] / fastest:.2f}x | {shown} |",
                flush=True,
            )
    finally:
        for _, process in bare.values():
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
