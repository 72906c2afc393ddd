"""The drift benchmark's measuring half, run by path with .venv-drift/bin/python (alibi-detect lives there).

Usage: drift_child.py DATA_DIR accuracy --detector tabular|mmd|psi --windows N [--reference NAME --skip K]
       drift_child.py DATA_DIR ingest --events N [--no-tests]

DATA_DIR holds reference.parquet, same.parquet and shifted.parquet (written by scripts/bench/drift.py).
``accuracy`` tests N no-drift and N drifted windows with the detector and prints the counts; ``ingest``
feeds single-row V2 request/response CloudEvents through the service's ingestion path (parse, validate,
dedupe, pair, buffer) on one core, with the test worker testing each closed window on that same core.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path


def _frames(folder: Path, reference: str = "reference"):
    import pandas as pd

    frames = {name: pd.read_parquet(folder / f"{name}.parquet") for name in ("same", "shifted")}
    return {"reference": pd.read_parquet(folder / f"{reference}.parquet"), **frames}


def accuracy(folder: Path, detector: str, windows: int, size: int, reference_name: str, skip: int) -> dict:
    import numpy as np

    from kfkit.serving.drift.detectors import build
    from kfkit.serving.drift.settings import DriftSettings

    frames = _frames(folder, reference_name)
    reference = frames["reference"].to_numpy(dtype=np.float32)
    settings = DriftSettings(detector=detector, p_val=0.05, correction="bonferroni", window_size=size)
    started = time.perf_counter()
    test = build(settings, reference)
    build_s = time.perf_counter() - started
    out: dict = {"detector": detector, "windows": windows, "window_size": size, "build_seconds": build_s}
    for kind in ("same", "shifted"):
        rows = frames[kind].to_numpy(dtype=np.float32)[skip * size :]  # windows no other reference tests
        if rows.shape[0] < windows * size:
            raise SystemExit(f"{kind}.parquet has {rows.shape[0]} rows, fewer than {windows} windows of {size}")
        flagged, seconds = 0, []
        for w in range(windows):
            started = time.perf_counter()
            result = test.test(rows[w * size : (w + 1) * size])
            seconds.append(time.perf_counter() - started)
            flagged += int(result["data"]["is_drift"])
        out[kind] = {"flagged": flagged, "median_s": statistics.median(seconds), "mean_s": statistics.fmean(seconds)}
    return out


def ingest(folder: Path, events: int, tests: bool) -> dict:
    import numpy as np

    from kfkit.serving.drift.reference import Reference
    from kfkit.serving.drift.service import DriftService
    from kfkit.serving.drift.settings import DriftSettings

    frames = _frames(folder)
    names = list(frames["reference"].columns)
    settings = DriftSettings(window_size=200, window_seconds=0)
    reference = Reference(
        uri="bench", folder=folder, model="bench", version="1", feature_names=names, threshold=0.5,
        rows=frames["reference"].to_numpy(dtype=np.float32), probabilities=None, settings=settings, categorical=[],
    )  # fmt: skip
    service = DriftService(reference, settings, backlog=events)  # room for every window: none is dropped
    if not tests:
        service.worker.submit = lambda _window: True  # ingestion alone: closed windows are thrown away
    service.start()
    rows = frames["same"].to_numpy(dtype=np.float32)
    rng = np.random.default_rng(0)
    base = {"ce-specversion": "1.0", "ce-source": "http://predictor", "content-type": "application/json",
            "ce-inferenceservicename": "bench", "ce-namespace": "", "ce-component": "predictor",
            "ce-endpoint": "default", "ce-metadata": "{}", "ce-modelversion": "1",
            "ce-time": "2026-12-01T10:00:00+00:00"}  # fmt: skip
    prepared = []
    for i in range(events // 2):  # pairs, as the predictor's payload logger sends them
        row = rows[i % rows.shape[0]].tolist()
        request = {"inputs": [{"name": "features", "shape": [1, len(names)], "datatype": "FP32", "data": row}]}
        p = float(rng.random())
        response = {"model_name": "bench", "model_version": "1", "id": f"id-{i}", "outputs": [
            {"name": "probability", "datatype": "FP32", "shape": [1], "data": [p]},
            {"name": "label", "datatype": "INT64", "shape": [1], "data": [int(p >= 0.5)]}]}  # fmt: skip
        event_id = f"{i:08x}-bench"
        prepared.append(({**base, "ce-id": event_id, "ce-type": "org.kubeflow.serving.inference.request"},
                         json.dumps(request).encode()))  # fmt: skip
        prepared.append(({**base, "ce-id": event_id, "ce-type": "org.kubeflow.serving.inference.response"},
                         json.dumps(response).encode()))  # fmt: skip
    cpu_started, started = time.process_time(), time.perf_counter()
    for headers, body in prepared:
        service.ingest(headers, body)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    tested_during = len(service.worker.results)
    service.stop(drain_s=600)
    total = time.perf_counter() - started  # until the worker has tested every closed window
    seconds = [r["test_seconds"] for r in service.worker.results]
    return {
        "events": len(prepared),
        "tests": tests,
        "wall_s": wall,
        "events_per_s": len(prepared) / wall,
        "events_per_s_all_tested": len(prepared) / total,
        "cpu_us_per_event": cpu / len(prepared) * 1e6,
        "windows_closed": len(prepared) // 2 // settings.window_size,
        "windows_tested_during": tested_during,
        "windows_dropped": int(service.metrics.get("kfkit_drift_windows_total", "dropped")),
        "worker_test_median_s": statistics.median(seconds) if seconds else None,
        "body_bytes": len(prepared[0][1]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="drift_child.py")
    parser.add_argument("data", type=Path)
    parser.add_argument("mode", choices=("accuracy", "ingest"))
    parser.add_argument("--detector", default="tabular", choices=("tabular", "mmd", "psi"))
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--window-size", type=int, default=200)
    parser.add_argument("--reference", default="reference", help="reference file (without .parquet)")
    parser.add_argument("--skip", type=int, default=0, help="windows of the data to skip")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--no-tests", action="store_true")
    parser.add_argument("--cpu", type=int, default=None, help="pin this process (and its threads) to one core")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    import torch

    torch.set_num_threads(1)
    if args.mode == "accuracy":
        result = accuracy(args.data, args.detector, args.windows, args.window_size, args.reference, args.skip)
    else:
        result = ingest(args.data, args.events, not args.no_tests)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
