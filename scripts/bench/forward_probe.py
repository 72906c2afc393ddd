"""The limit: CPU µs per call of the bare forward pass, and of V2 JSON decode + forward + encode, in-process.

A program of its own, so the timing runs in a fresh interpreter on the server core with one thread, like
the servers; :func:`scripts.bench.measure.measure_forward` runs it by path and reads its last line:

    python -P scripts/bench/forward_probe.py MODEL_DIR SECONDS BATCHES   # prints KFKIT_FORWARD {json}

It imports kfkit, numpy, orjson and torch, nothing from this folder.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

MARK = "KFKIT_FORWARD "
"""Prefix of the result line."""


def _cpu_and_wall_us(fn: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """Median of three timed windows after 200 warm-up calls: (CPU µs per call, wall µs per call)."""
    for _ in range(200):
        fn()
    wall, cpu = [], []
    for _ in range(3):
        n, start, cpu0 = 0, time.perf_counter(), time.process_time()
        while (elapsed := time.perf_counter() - start) < seconds / 3:
            for _ in range(100):
                fn()
            n += 100
        wall.append(elapsed / n)
        cpu.append((time.process_time() - cpu0) / n)
    return sorted(cpu)[1] * 1e6, sorted(wall)[1] * 1e6


def probe(model_dir: str, seconds: float, batches: Sequence[int]) -> dict[str, float]:
    """``forward_b<N>`` and ``json_forward_b<N>`` (CPU µs per call), each also as ``…_wall``."""
    import torch

    torch.set_num_threads(1)
    from kfkit.model import load_model

    model, spec = load_model(model_dir)
    out: dict[str, float] = {}
    for batch in batches:
        out |= _time_batch(model, spec.input_dim, batch, seconds)
    return out


def _time_batch(model: Any, width: int, batch: int, seconds: float) -> dict[str, float]:
    import numpy as np
    import orjson

    from kfkit.model import predict_proba

    rows = np.random.default_rng(0).normal(size=(batch, width)).astype(np.float32)
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [batch, width],
                    "datatype": "FP32",
                    "data": np.round(rows, 4).reshape(-1).tolist(),
                }
            ]
        }
    )

    def forward() -> None:
        predict_proba(model, rows)

    def json_path() -> None:
        request = orjson.loads(body)
        x = np.asarray(request["inputs"][0]["data"], dtype=np.float32).reshape(request["inputs"][0]["shape"])
        p = predict_proba(model, x)
        orjson.dumps(
            {
                "outputs": [
                    {"name": "probability", "shape": [batch], "datatype": "FP32", "data": p.tolist()},
                    {
                        "name": "label",
                        "shape": [batch],
                        "datatype": "INT64",
                        "data": (p >= 0.5).astype(np.int64).tolist(),
                    },
                ]
            }
        )

    out: dict[str, float] = {}
    for name, fn in (("forward", forward), ("json_forward", json_path)):
        # CPU time: what a busy machine disturbs least, and what the servers' µs/req measure too
        out[f"{name}_b{batch}"], out[f"{name}_b{batch}_wall"] = _cpu_and_wall_us(fn, seconds)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``MODEL_DIR SECONDS BATCHES`` (comma-separated); prints one ``KFKIT_FORWARD {json}`` line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: forward_probe.py MODEL_DIR SECONDS BATCHES (e.g. 1,64)", file=sys.stderr)
        return 2
    model_dir, seconds, batches = args[0], float(args[1]), [int(b) for b in args[2].split(",")]
    print(MARK + json.dumps(probe(model_dir, seconds, batches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
