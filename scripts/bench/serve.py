"""``kfkit bench serve``: kfkit's model server against Seldon MLServer and the raw forward pass, side by side.

One 30→64→1 MLP (fixed seed) is published to a temporary file:// registry; kfkit's server loads it from
there, MLServer 1.7.1 (its own environment, ``.venv-mlserver``) loads the same safetensors through a small
custom runtime, and both get the same request bytes. Servers are pinned to one core with one torch thread,
the load generator to another; configurations are alternated A/B/A/B and the medians of the repeats are
reported: req/s, rows/s, p50/p95/p99 latency, errors, and the server's CPU-microseconds per request
(utime+stime from /proc, which does not depend on how fast the client is) next to the in-process
forward-pass cost (the limit). Also measured: p99 at 70% of peak from an open-loop run, and adaptive
batching on against off.

    python -m scripts.bench.serve [--quick | --full] [--out DIR] [--servers kfkit,mlserver] ...   # = kfkit bench serve
    python -m scripts.bench.serve --capacity [--slo-p99-ms 100,10]   # one replica's capacity at an SLO, deploy keys
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from .capacity_run import render_capacity, run_capacity
from .report import render_markdown
from .run import run_bench
from .settings import PRESETS

__all__ = ["build_parser", "main"]

_CLI_DOC = """Serving benchmark: kfkit's KServe server vs Seldon MLServer 1.7.1 vs the raw forward pass, side by side.

Publishes one 30→64→1 MLP, serves it with kfkit (V2 REST, V2 gRPC, V1 REST) and with MLServer (V2 REST and
gRPC; its own environment, .venv-mlserver; tuned and with its adaptive batching, ratios against its best),
pins the servers to one core and the load generator to another, sweeps concurrency for batch-1 and batch-64
requests with the servers alternated, measures latency at 70% of each peak (open loop) and batching on vs
off (the MLP, and the same MLP as a TensorFlow SavedModel), and writes results.json and results.md (medians
of the repeats, the command and the machine) into --out.
"""


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser(prog: str = "kfkit bench serve") -> argparse.ArgumentParser:
    """Options; every default comes from the chosen preset."""
    parser = argparse.ArgumentParser(
        prog=prog, description=_CLI_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_const",
        dest="preset",
        const="quick",
        help="a few seconds per server: what the test runs (batch 1, concurrency 4, 1 repeat)",
    )
    preset.add_argument(
        "--full",
        action="store_const",
        dest="preset",
        const="full",
        help="concurrency 1,4,16,64, 5 s runs, 3 repeats (about 20 minutes)",
    )
    parser.set_defaults(preset="short")
    parser.add_argument("--out", help="results folder (default .kfkit/bench/serve-<time>)")
    parser.add_argument("--concurrency", type=_ints, help="closed-loop concurrencies, e.g. 1,4,16,64")
    parser.add_argument("--batches", type=_ints, help="rows per request, e.g. 1,64")
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--repeats", type=int, help="runs per configuration (medians reported)")
    parser.add_argument(
        "--servers",
        type=_names,
        help="kfkit,mlserver,mlserver-batching[,mlserver-default,kfkit-aio] (default: the first three)",
    )
    parser.add_argument("--protocols", type=_names, help="v2-rest,v2-grpc,v1-rest")
    parser.add_argument("--no-open-loop", action="store_true", help="skip the latency run at 70%% of peak")
    parser.add_argument("--no-batching", action="store_true", help="skip adaptive batching on vs off")
    parser.add_argument(
        "--batching-frameworks",
        type=_names,
        help="batching on vs off for the PyTorch MLP (always) and, with tensorflow (default), its SavedModel twin",
    )
    parser.add_argument("--no-forward", action="store_true", help="skip the in-process forward-pass timing")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio REST client even if wrk is installed")
    parser.add_argument("--server-cpu", type=int, help="core for the servers (default 0)")
    parser.add_argument("--client-cpu", type=int, help="core for the load generator (default 1)")
    parser.add_argument("--mlserver-venv", help="MLServer environment (default .venv-mlserver)")
    capacity = parser.add_argument_group(
        "capacity per replica (--capacity)",
        "Instead of the comparison: kfkit's server alone on one core, an open-loop rate search (x1.5 steps,\n"
        "then bisection) for the highest rate whose p99 stays under the SLO with no errors and >= 95% achieved,\n"
        "and the deploy.autoscaling_* keys that scale a replica at 70% of it (results.json, results.md).\n"
        "Defaults here: --protocols v2-rest --batches 1; --duration is seconds per probe.",
    )
    capacity.add_argument("--capacity", action="store_true", help="measure the capacity per replica at an SLO")
    capacity.add_argument(
        "--slo-p99-ms", type=_floats, help="p99 bound(s) in ms, e.g. 100 or 100,10 (default: deploy.slo_p99_ms)"
    )
    capacity.add_argument("--start-rate", type=float, help="first offered rate, req/s (default 100)")
    capacity.add_argument("--max-rate", type=float, help="highest offered rate, req/s (default 200000)")
    parser.add_argument(
        "--kfkit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for kfkit's server (repeat it), e.g. --kfkit-arg=--enable_latency_logging=false",
    )
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None, *, prog: str = "kfkit bench serve") -> int:
    """Run the benchmark (or, with ``--capacity``, the capacity search) and print the markdown report.

    Returns:
        0 on success, 1 if a server failed to start or answered wrongly, 2 for --capacity with another
        server than kfkit (one line on stderr).
    """
    args = build_parser(prog).parse_args(argv)
    from kfkit.errors import KfkitError

    settings = PRESETS[args.preset]
    overrides = {
        "concurrencies": args.concurrency, "batches": args.batches, "duration_s": args.duration,
        "repeats": args.repeats, "servers": args.servers, "protocols": args.protocols,
        "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "mlserver_venv": args.mlserver_venv,
        "batching_frameworks": args.batching_frameworks,
    }  # fmt: skip
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings = replace(
        settings,
        open_loop=settings.open_loop and not args.no_open_loop,
        batching=settings.batching and not args.no_batching,
        forward=settings.forward and not args.no_forward,
        use_wrk=settings.use_wrk and not args.no_wrk,
        kfkit_args=[*settings.kfkit_args, *args.kfkit_arg],
    )
    command = " ".join([prog, shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    if args.capacity:
        if args.servers and args.servers != ["kfkit"]:
            print("bench_serve: error: --capacity measures kfkit's server only (--servers kfkit)", file=sys.stderr)
            return 2
        extra = {"capacity_slos_ms": args.slo_p99_ms, "capacity_start_rate": args.start_rate}
        extra |= {"capacity_max_rate": args.max_rate}
        settings = replace(
            settings,
            protocols=args.protocols or ["v2-rest"],
            batches=args.batches or [1],
            **{k: v for k, v in extra.items() if v is not None},
        )
    out = Path(args.out or f".kfkit/bench/{'capacity' if args.capacity else 'serve'}-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        if args.capacity:
            results = run_capacity(settings, out, command=command)
        else:
            results = run_bench(settings, out, command=command)
    except KfkitError as e:
        print(f"bench_serve: error: {e}", file=sys.stderr)
        return 1
    print(render_capacity(results) if args.capacity else render_markdown(results))
    print(f"results: {out / 'results.json'} and {out / 'results.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m scripts.bench.serve"))
