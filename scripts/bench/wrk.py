"""Closed-loop REST load with wrk (``apt-get install wrk``), for ``kfkit bench serve``; see :mod:`.load`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .load import HttpTarget, LoadResult

__all__ = ["wrk_available", "run_wrk"]

_WRK_MARK = "KFKIT_WRK_JSON "
# wrk runs this per thread; `done` prints the run's figures as one JSON line (latency in microseconds).
_WRK_LUA = r"""
local f = assert(io.open(os.getenv("KFKIT_BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'KFKIT_WRK_JSON {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,' ..
    '"p50_us":%d,"p95_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean, latency.max))
end
"""


def wrk_available() -> str | None:
    """Path of the ``wrk`` binary, or None (install it with ``apt-get install wrk``)."""
    return shutil.which("wrk")


def run_wrk(target: HttpTarget, *, concurrency: int, duration_s: float, cpu: int | None = None) -> LoadResult:
    """Closed-loop REST load with wrk (one thread, ``concurrency`` keep-alive connections).

    Args:
        target: Endpoint and body.
        concurrency: Connections, each with one request in flight.
        duration_s: Length of the run (wrk takes whole seconds; at least 1).
        cpu: Core to pin wrk to (None: no pinning).

    Raises:
        RuntimeError: wrk is missing, failed, or printed no result.
    """
    binary = wrk_available()
    if binary is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk); the asyncio client is used instead")
    seconds = max(1, round(duration_s))
    with tempfile.TemporaryDirectory(prefix="kfkit-wrk-") as tmp:
        body, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
        body.write_bytes(target.body)
        script.write_text(_WRK_LUA)
        command = [binary, "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script)]
        if cpu is not None and shutil.which("taskset"):
            command = ["taskset", "-c", str(cpu), *command]
        process = subprocess.Popen(
            [*command, target.url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KFKIT_BENCH_BODY": str(body)},
        )
        output = process.stdout.read().decode(errors="replace") if process.stdout else ""
        # wait4, not wait: it also returns the child's rusage, i.e. wrk's own CPU time.
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.stdout:
            process.stdout.close()
    match = re.search(re.escape(_WRK_MARK) + r"(\{.*\})", output)
    if process.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed (exit {process.returncode}): {output[-1000:]}")
    data = json.loads(match.group(1))
    return LoadResult(
        tool="wrk",
        mode="closed",
        concurrency=concurrency,
        requests=data["requests"] + data["socket_errors"],
        errors=data["status_errors"] + data["socket_errors"],
        duration_s=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p95_ms=data["p95_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        client_cpu_s=usage.ru_utime + usage.ru_stime,
    )
