"""Measuring ``kfkit bench serve``: the correctness check, one load run, the sweep, open loop, batching, medians."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from kfkit.errors import ServingError

from . import forward_probe
from .fixtures import MODEL_NAME, BenchModel
from .load import (
    GRPC_INFER_METHOD,
    HttpTarget,
    LoadResult,
    run_grpc_closed,
    run_grpc_open,
    run_http_closed,
    run_http_open,
)
from .payloads import Payloads, grpc_request, v1_body, v2_body
from .servers import Server, on_cpu, one_thread_env
from .settings import BenchSettings
from .wrk import run_wrk, wrk_available

__all__ = [
    "check_answers",
    "load_once",
    "measure_run",
    "median_rows",
    "sweep",
    "find_peaks",
    "open_loop_runs",
    "batching_runs",
    "measure_forward",
    "progress",
]


def check_answers(server: Server, protocol: str, model: BenchModel) -> None:
    """One batch-64 request: the server's probabilities must equal the in-process model's (1e-6)."""
    import httpx
    import numpy as np

    rows = model.rows
    if protocol == "v2-grpc":
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        with grpc.insecure_channel(server.grpc_target) as channel:
            call = channel.unary_unary(GRPC_INFER_METHOD)
            reply = pb.ModelInferResponse.FromString(call(grpc_request(rows), timeout=30))
        index = [o.name for o in reply.outputs].index("probability")
        if reply.raw_output_contents:
            got = np.frombuffer(reply.raw_output_contents[index], dtype=np.float32)
        else:
            got = np.asarray(reply.outputs[index].contents.fp32_contents, dtype=np.float32)
    else:
        v1 = protocol == "v1-rest"
        url = (
            f"{server.base_url}/v1/models/{MODEL_NAME}:predict"
            if v1
            else f"{server.base_url}/v2/models/{MODEL_NAME}/infer"
        )
        response = httpx.post(
            url,
            content=v1_body(rows) if v1 else v2_body(rows),
            timeout=30,
            trust_env=False,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 200:
            raise ServingError(f"{server.name} {protocol} answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        if v1:
            got = np.asarray([p["probability"] for p in body["predictions"]], dtype=np.float32)
        else:
            got = np.asarray(next(o for o in body["outputs"] if o["name"] == "probability")["data"], dtype=np.float32)
    if got.shape != model.expected.shape or not np.allclose(got, model.expected, rtol=0, atol=1e-6):
        raise ServingError(
            f"{server.name} {protocol} does not answer the model's probabilities: {got[:4]} vs " f"{model.expected[:4]}"
        )


def load_once(
    server: Server,
    protocol: str,
    payloads: Payloads,
    batch: int,
    *,
    concurrency: int,
    duration_s: float,
    settings: BenchSettings,
    rate: float | None = None,
) -> LoadResult:
    """One load run of ``protocol`` against ``server``: closed loop, or open loop at ``rate`` requests/s."""
    if protocol == "v2-grpc":
        request = payloads.grpc[batch]
        if rate is not None:
            return run_grpc_open(server.grpc_target, request, rate=rate, duration_s=duration_s)
        return run_grpc_closed(server.grpc_target, request, concurrency=concurrency, duration_s=duration_s)
    if protocol == "v1-rest":
        target = HttpTarget("127.0.0.1", server.http_port, f"/v1/models/{MODEL_NAME}:predict", payloads.v1_rest[batch])
    else:
        target = HttpTarget("127.0.0.1", server.http_port, f"/v2/models/{MODEL_NAME}/infer", payloads.v2_rest[batch])
    if rate is not None:
        return run_http_open(target, rate=rate, duration_s=duration_s)
    if settings.use_wrk and wrk_available() and duration_s >= 1:
        return run_wrk(target, concurrency=concurrency, duration_s=duration_s, cpu=settings.client_cpu)
    return run_http_closed(target, concurrency=concurrency, duration_s=duration_s)


def measure_run(
    server: Server,
    protocol: str,
    payloads: Payloads,
    batch: int,
    *,
    concurrency: int,
    duration_s: float,
    settings: BenchSettings,
    rate: float | None = None,
    **labels: Any,
) -> dict[str, Any]:
    """One load run and the server's CPU time during it, as a results row (``labels`` added to it)."""
    cpu0 = server.cpu_s()
    result = load_once(
        server, protocol, payloads, batch, concurrency=concurrency, duration_s=duration_s, settings=settings, rate=rate
    )
    cpu = server.cpu_s() - cpu0
    ok = result.requests - result.errors
    return {
        "server": server.name,
        "protocol": protocol,
        "batch": batch,
        "concurrency": concurrency,
        **labels,
        "req_per_s": result.req_per_s,
        "rows_per_s": result.req_per_s * batch,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "requests": result.requests,
        "server_cpu_s": cpu,
        "server_cpu_us_per_req": cpu * 1e6 / ok if ok else None,
        "server_cpu_share": cpu / result.duration_s if result.duration_s else 0.0,
        "load": result.to_dict(),
    }


def median_rows(runs: list[dict], keys: Sequence[str]) -> list[dict]:
    """Group runs by ``keys`` and take the median of every figure (errors are summed)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows = []
    for key, group in groups.items():
        row = dict(zip(keys, key, strict=True))
        for figure in (
            "req_per_s",
            "rows_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "server_cpu_us_per_req",
            "server_cpu_share",
        ):
            values = [r[figure] for r in group if r[figure] is not None]
            row[figure] = statistics.median(values) if values else None
        row["client_cpu_share"] = statistics.median(r["load"]["client_cpu_share"] for r in group)
        row["errors"] = sum(r["errors"] for r in group)
        row["requests"] = sum(r["requests"] for r in group)
        row["runs"] = [round(r["req_per_s"], 1) for r in group]
        row["tool"] = group[0]["load"]["tool"]
        if "target_rate" in group[0]:
            row["target_rate"] = group[0]["target_rate"]
        rows.append(row)
    return rows


def progress(message: str) -> None:
    """One timestamped progress line on stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sweep(
    servers: dict[str, Server], cases: list[tuple[str, str]], payloads: Payloads, settings: BenchSettings
) -> list[dict]:
    """The closed-loop grid: batch x concurrency x repeat, servers alternated A/B/A/B inside each cell."""
    runs = []
    for batch in settings.batches:
        for concurrency in settings.concurrencies:
            for repeat in range(settings.repeats):
                for name, protocol in cases:
                    run = measure_run(
                        servers[name],
                        protocol,
                        payloads,
                        batch,
                        concurrency=concurrency,
                        duration_s=settings.duration_s,
                        settings=settings,
                        repeat=repeat,
                    )
                    runs.append(run)
                    progress(
                        f"b{batch} c{concurrency} r{repeat + 1} {name:<16} {protocol:<8} "
                        f"{run['req_per_s']:8,.0f} req/s  p99 {run['p99_ms']:7.2f} ms  errors {run['errors']}  "
                        f"server {run['server_cpu_us_per_req'] or 0:6.0f} µs/req"
                    )
    return runs


def find_peaks(sweep: list[dict]) -> dict[str, dict]:
    """Best median req/s over the concurrency sweep, per server, protocol and batch."""
    peaks: dict[str, dict] = {}
    for row in sweep:
        key = f"{row['server']}/{row['protocol']}/b{row['batch']}"
        if key not in peaks or row["req_per_s"] > peaks[key]["req_per_s"]:
            peaks[key] = {
                "req_per_s": row["req_per_s"],
                "rows_per_s": row["rows_per_s"],
                "concurrency": row["concurrency"],
                "p99_ms": row["p99_ms"],
            }
    return peaks


def open_loop_runs(
    servers: dict[str, Server], cases: list[tuple[str, str]], payloads: Payloads, peaks: dict, settings: BenchSettings
) -> list[dict]:
    """p50/p95/p99 at ``open_loop_fraction`` of each server's own batch-1 peak, open loop, alternated."""
    batch = 1 if 1 in settings.batches else settings.batches[0]
    chosen = [(s, p) for s, p in cases if p in ("v2-rest", "v2-grpc") and f"{s}/{p}/b{batch}" in peaks]
    runs = []
    for repeat in range(settings.repeats):
        for name, protocol in chosen:
            rate = settings.open_loop_fraction * peaks[f"{name}/{protocol}/b{batch}"]["req_per_s"]
            run = measure_run(
                servers[name],
                protocol,
                payloads,
                batch,
                concurrency=64,
                rate=rate,
                duration_s=settings.open_loop_duration_s,
                settings=settings,
                repeat=repeat,
                target_rate=round(rate, 1),
            )
            runs.append(run)
            progress(
                f"open loop {name:<16} {protocol:<8} at {rate:8,.0f}/s: p50 {run['p50_ms']:.2f} "
                f"p99 {run['p99_ms']:.2f} ms, errors {run['errors']}"
            )
    return median_rows(runs, ("server", "protocol", "batch", "concurrency"))


def batching_runs(servers: dict[str, Server], payloads: Payloads, settings: BenchSettings) -> list[dict]:
    """Kfkit with adaptive batching (default) against max batch size 1, batch-1 requests, high concurrency.

    Per model (the PyTorch MLP, and its TensorFlow twin when that was served), per protocol, on and off
    alternate within each repeat.
    """
    pairs = [("kfkit", "kfkit-nobatch"), ("kfkit-tf", "kfkit-tf-nobatch")]
    cases = [
        (s, p)
        for pair in pairs
        if all(name in servers for name in pair)
        for p in ("v2-rest", "v2-grpc")
        if p in settings.protocols
        for s in pair
    ]
    runs = []
    for repeat in range(settings.repeats):
        for name, protocol in cases:
            run = measure_run(
                servers[name],
                protocol,
                payloads,
                1 if 1 in settings.batches else settings.batches[0],
                concurrency=settings.batching_concurrency,
                duration_s=settings.duration_s,
                settings=settings,
                repeat=repeat,
            )
            runs.append(run)
            progress(f"batching {name:<14} {protocol:<8} {run['req_per_s']:8,.0f} req/s  p99 {run['p99_ms']:.2f} ms")
    return median_rows(runs, ("server", "protocol", "batch", "concurrency"))


def measure_forward(
    model: BenchModel, settings: BenchSettings, batches: Sequence[int], seconds: float
) -> dict[str, float]:
    """µs per call of the bare forward pass, and of V2 JSON decode+forward+encode, on the server core.

    Runs ``forward_probe.py`` by path in a fresh interpreter with one thread (``-P``: this folder's module
    names stay off its ``sys.path``).

    Raises:
        ServingError: the probe failed or printed no result.
    """
    command = [
        sys.executable,
        "-P",
        forward_probe.__file__,
        str(model.model_dir),
        str(seconds),
        ",".join(map(str, batches)),
    ]
    with on_cpu(settings.server_cpu):
        result = subprocess.run(command, capture_output=True, text=True, env=one_thread_env(), timeout=600)
    line = next((x for x in result.stdout.splitlines() if x.startswith(forward_probe.MARK)), None)
    if result.returncode != 0 or line is None:
        raise ServingError(f"forward-pass timing failed: {result.stderr[-1000:]}")
    return json.loads(line.split(" ", 1)[1])
