"""Drift detection figures: false-positive and detection rates with Wilson intervals, and ingestion speed.

Usage (from a source checkout's root, main environment):
    .venv/bin/python -m scripts.bench.drift [--windows 500] [--mmd-windows 100] [--detectors tabular,mmd,psi]
                                            [--events 100000] [--repeats 3] [--http-seconds 10] [--quick]

Data: kfkit's synthetic_fraud generator (30 features); a 1,000-row reference (seed 1), no-drift windows
from another seed, and drifted windows whose v02, v05 and v10 are moved by 0.5 reference standard
deviations. Each detector (alibi-detect TabularDrift with K-S and Bonferroni at p_val 0.05, MMDDrift on the
PyTorch backend with 100 permutations, PSI at 0.25 over 10 quantile bins) tests 200-row windows in
.venv-drift (scripts/bench/drift_child.py), pinned to one core.

Ingestion: single-row V2 request/response CloudEvents through the service's own path (parse, validate,
dedupe, pair, buffer) on one core while the test worker tests every closed 200-row window on that same
core, alternating with runs whose windows are not tested; then the same over HTTP: the detector process on
core 0, wrk on core 1 sending single-row V2 request events with unique ids. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from .report import machine_line

REPO = Path(__file__).resolve().parents[2]
DRIFT_PYTHON = REPO / ".venv-drift" / "bin" / "python"
CHILD = Path(__file__).with_name("drift_child.py")
FEATURES = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
SHIFTED = ("v02", "v05", "v10")
WRK_SCRIPT = """
counter = 0
bodies = {%s}
request = function()
  counter = counter + 1
  wrk.headers["ce-id"] = "wrk-" .. counter
  return wrk.format("POST", "/", nil, bodies[counter %% #bodies + 1])
end
"""
"""wrk's Lua: unique ce-ids, rows taken in turn from no-drift data (a constant row would drift every window)."""


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def write_data(folder: Path, windows: int, size: int, references: int) -> None:
    from kfkit.data.sources import synthetic_fraud

    reference = synthetic_fraud(n_rows=1000, seed=1)[FEATURES]
    reference.to_parquet(folder / "reference.parquet", index=False)
    for k in range(1, references):  # more 1,000-row references, from other seeds
        synthetic_fraud(n_rows=1000, seed=100 + k)[FEATURES].to_parquet(folder / f"reference{k}.parquet", index=False)
    synthetic_fraud(n_rows=windows * size, seed=2)[FEATURES].to_parquet(folder / "same.parquet", index=False)
    shifted = synthetic_fraud(n_rows=windows * size, seed=3)[FEATURES]
    for name in SHIFTED:
        shifted[name] += 0.5 * float(reference[name].std())
    shifted.to_parquet(folder / "shifted.parquet", index=False)


def child(*args: str) -> dict:
    command = [str(DRIFT_PYTHON), str(CHILD), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=7200, env={**os.environ,
                            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})  # fmt: skip
    if result.returncode:
        raise SystemExit(f"{shlex.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def accuracy_rows(data: Path, detectors: list[str], windows: int, mmd_windows: int, references: int) -> list[str]:
    """One row per detector; with ``references`` > 1 the windows are shared out among that many references."""
    rows = []
    for detector in detectors:
        n = mmd_windows if detector == "mmd" else windows
        started = time.perf_counter()
        share = n // references
        runs = [
            child(str(data), "accuracy", "--detector", detector, "--windows", str(share), "--cpu", "0",
                  "--reference", "reference" + (str(k) if k else ""), "--skip", str(k * share))
            for k in range(references)
        ]  # fmt: skip
        n = share * references
        r = {
            kind: {
                "flagged": sum(x[kind]["flagged"] for x in runs),
                "median_s": statistics.median(x[kind]["median_s"] for x in runs),
            }
            for kind in ("same", "shifted")
        }
        fp, tp = r["same"]["flagged"], r["shifted"]["flagged"]
        fpr, det = wilson(fp, n), wilson(tp, n)
        ms = statistics.fmean([r["same"]["median_s"], r["shifted"]["median_s"]]) * 1000
        label = f"{detector}" + (f", {references} references" if references > 1 else "")
        rows.append(
            f"| {label} | {n} + {n} | {fp / n:.3f} [{fpr[0]:.3f}, {fpr[1]:.3f}] | {tp / n:.3f} "
            f"[{det[0]:.3f}, {det[1]:.3f}] | {ms:.1f} ms |"
        )
        print(f"{detector}: {r} ({time.perf_counter() - started:.0f} s)", flush=True)
    return rows


def ingest_rows(data: Path, events: int, repeats: int) -> list[str]:
    runs: dict[bool, list[dict]] = {True: [], False: []}
    for _ in range(repeats):  # alternate, so drift in machine load hits both alike
        for tests in (True, False):
            args = [str(data), "ingest", "--events", str(events), "--cpu", "0"] + ([] if tests else ["--no-tests"])
            runs[tests].append(child(*args))
            print(f"ingest tests={tests}: {runs[tests][-1]}", flush=True)
    rows = []
    for tests, label in ((True, "while every window is tested"), (False, "windows not tested")):
        rate = statistics.median(r["events_per_s"] for r in runs[tests])
        cpu = statistics.median(r["cpu_us_per_event"] for r in runs[tests])
        extra = ""
        if tests:
            worker = statistics.median(r["worker_test_median_s"] for r in runs[tests])
            every = statistics.median(r["events_per_s_all_tested"] for r in runs[tests])
            behind = statistics.median(r["windows_closed"] - r["windows_tested_during"] for r in runs[tests])
            extra = (f"; worker test per window {worker * 1000:.1f} ms (median); {behind:.0f} windows queued "
                     f"when ingestion ended; {every:,.0f} events/s until every window was tested")  # fmt: skip
        rows.append(f"| in-process, {label} | {rate:,.0f} events/s | {cpu:.1f} µs CPU/event{extra} |")
    return rows


def http_row(data: Path, seconds: int) -> list[str]:
    """The detector process on core 0 and wrk on core 1: single-row V2 request events, unique ids."""
    if not shutil.which("wrk") or not shutil.which("taskset"):
        return ["| HTTP | not measured (needs wrk and taskset) | |"]
    from kfkit.deploy.local import free_port
    from kfkit.registry import publish_folder

    release = data / "release"
    release.mkdir(exist_ok=True)
    shutil.copy(data / "reference.parquet", release / "reference.parquet")
    (release / "model.json").write_text(json.dumps({"name": "bench", "feature_names": FEATURES, "threshold": 0.5}))
    (release / "config.json").write_text(json.dumps({"drift": {"window_size": 200, "window_seconds": 0}}))
    uri = publish_folder(release, registry_uri=f"file://{data / 'registry'}", name="bench").uri
    port = free_port()
    command = ["taskset", "-c", "0", str(DRIFT_PYTHON), "-m", "kfkit.serving.drift", "--model-uri", uri, "--port",
               str(port), "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1", "K_SINK": ""})
    try:
        _wait_ready(port)
        import pandas as pd

        rows = pd.read_parquet(data / "same.parquet").iloc[:2000].to_numpy().tolist()
        bodies = [json.dumps({"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP32", "data": r}]})
                  for r in rows]  # fmt: skip
        script = data / "events.lua"
        script.write_text(WRK_SCRIPT % ",".join("[[" + b.replace("]]", "] ]") + "]]" for b in bodies))
        cpu_before = _cpu_seconds(server.pid)
        wrk = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{seconds}s", "-s", str(script),
             "-H", "ce-specversion: 1.0", "-H", "ce-source: wrk",
             "-H", "ce-type: org.kubeflow.serving.inference.request", "-H", "content-type: application/json", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=seconds + 60,
        )  # fmt: skip
        cpu = _cpu_seconds(server.pid) - cpu_before
        status = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/drift/status", timeout=10).read())
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    done = re.search(r"(\d+) requests in ([\d.]+)(m?s)", wrk.stdout)
    if done is None:
        raise SystemExit(f"wrk printed no request count:\n{wrk.stdout}{wrk.stderr}")
    elapsed = float(done[2]) / (1000 if done[3] == "ms" else 1)
    accepted, duplicates = status["events"]["accepted"], status["events"]["duplicate"]
    rate = accepted / elapsed  # events the detector took, over wrk's run
    non_2xx = next((line.strip() for line in wrk.stdout.splitlines() if "Non-2xx" in line), "no non-2xx answers")
    return [
        f"| HTTP (uvicorn, one core; wrk on the other) | {rate:,.0f} events/s | {cpu / max(accepted, 1) * 1e6:.0f} µs "
        f"server CPU/event; wrk: {done[1]} answers, {accepted:,} events accepted, {duplicates} duplicates, "
        f"{status['windows']['tested']} windows tested, "
        f"{status['windows']['dropped']} dropped; {non_2xx} |"
    ]


def _wait_ready(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2)
            return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the detector on port {port} was not ready in {timeout:.0f} s")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.drift", description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=500, help="no-drift and drifted windows per detector")
    parser.add_argument("--mmd-windows", type=int, default=100, help="windows of each kind for MMD (about 1 s each)")
    parser.add_argument("--detectors", default="tabular,mmd,psi")
    parser.add_argument("--references", type=int, default=1, help="1,000-row references the windows are shared by")
    parser.add_argument("--events", type=int, default=100_000, help="events per ingestion run (0: none)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--http-seconds", type=int, default=10, help="0 skips the HTTP run")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20 windows, 10 for MMD, 10,000 events")
    args = parser.parse_args(argv)
    if not DRIFT_PYTHON.exists():
        print(f"{DRIFT_PYTHON} is missing: run `make .venv-drift/.installed`", file=sys.stderr)
        return 2
    if args.quick:
        args.windows, args.mmd_windows, args.events, args.repeats, args.http_seconds = 20, 10, 10_000, 1, 3
    machine = machine_line()
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-drift-") as tmp:
        data = Path(tmp)
        write_data(data, max(args.windows, args.mmd_windows), 200, args.references)
        table = accuracy_rows(data, args.detectors.split(","), args.windows, args.mmd_windows, args.references)
        speed = ingest_rows(data, args.events, args.repeats) if args.events else []
        if args.http_seconds:
            speed += http_row(data, args.http_seconds)
    print("\n| detector | windows (no drift + drift) | false-positive rate [95% Wilson] | detection rate "
          "[95% Wilson] | test per window (median) |\n|---|---|---|---|---|")  # fmt: skip
    print("\n".join(table))
    print("\n| ingestion (single-row V2 events) | rate | cost |\n|---|---|---|")
    print("\n".join(speed))
    print(f"\ncommand: {shlex.join([sys.executable, '-m', 'scripts.bench.drift', *(argv or sys.argv[1:])])}")
    print(f"machine: {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
