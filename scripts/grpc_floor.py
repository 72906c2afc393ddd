#!/usr/bin/env python3
"""The gRPC floor: a bare grpc.aio V2 server that answers a constant, against kfkit's server, same load.

kfkit's V2 gRPC throughput is bounded by grpcio itself (its C core, poller thread and per-call Python
objects), not by kfkit's work per request. This script measures that bound on this machine: a server that
deserializes each ModelInferRequest and returns a prebuilt ModelInferResponse, pinned to one core, loaded
like `kfkit bench serve` loads kfkit (grpc.aio client, N calls in flight, pinned to the other core), and
kfkit's own server beside it, alternated. It prints req/s and server CPU µs per request for each.

    .venv/bin/python scripts/grpc_floor.py --batches 1,64 --concurrency 16 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_BARE_SERVER = r"""
import asyncio, sys
import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

async def main(port, batch):
    answer = pb.ModelInferResponse(model_name="bench-mlp", outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="probability", datatype="FP32", shape=[batch],
                                                contents=pb.InferTensorContents(fp32_contents=[0.5] * batch))])

    async def infer(request, context):
        return answer

    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            infer, request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString)})
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def main(argv: list[str] | None = None) -> int:
    """Measure the bare grpc.aio server and kfkit's, alternated; print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,64", help="rows per request, e.g. 1,64")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per server (medians reported)")
    args = parser.parse_args(argv)

    from kfkit.deploy.local import free_port
    from kfkit.serving import bench
    from kfkit.serving.bench_load import run_grpc_closed

    batches = [int(b) for b in args.batches.split(",")]
    os.sched_setaffinity(0, {1})  # the load generator's core; servers go to core 0
    with tempfile.TemporaryDirectory(prefix="kfkit-grpc-floor-") as tmp:
        work = Path(tmp)
        model = bench._publish_model(work)
        settings = bench.BenchSettings(server_cpu=0, client_cpu=1)
        kfkit = bench._kfkit_server("kfkit", model, settings, work)
        kfkit.start()
        kfkit.wait_ready()
        try:
            print("| server | batch | req/s (median) | server µs/req | runs |")
            print("|---|---|---|---|---|")
            for batch in batches:
                request = bench._grpc_request(model.rows[:batch])
                port = free_port()
                bare = subprocess.Popen(
                    ["taskset", "-c", "0", sys.executable, "-c", _BARE_SERVER, str(port), str(batch)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env=bench._one_thread_env(),
                    start_new_session=True,
                )
                try:
                    if bare.stdout is None or bare.stdout.readline().strip() != "READY":
                        raise SystemExit("the bare gRPC server did not start")
                    targets = {"bare grpc.aio": (f"127.0.0.1:{port}", bare.pid), "kfkit": (kfkit.grpc_target, None)}
                    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
                    for _ in range(args.repeats):
                        for name, (target, pid) in targets.items():
                            cpu0 = kfkit.cpu_s() if pid is None else bench._process_group_cpu_s(pid)
                            result = run_grpc_closed(
                                target, request, concurrency=args.concurrency, duration_s=args.duration
                            )
                            cpu = (kfkit.cpu_s() if pid is None else bench._process_group_cpu_s(pid)) - cpu0
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
