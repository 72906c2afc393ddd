#!/usr/bin/env python3
"""Training throughput: samples/s of 1 and 2 torchrun processes on the synthetic fraud data, side by side.

Usage: python scripts/bench_train.py [--rows 1000000] [--epochs 2] [--repeats 3] [--batch-size 1024]
Runs 1-process and 2-process training alternately (A/B/A/B), reports the median samples/s per
configuration (first epoch excluded when there are several: it pays for warm-up) and the scaling ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default 1,000,000)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3)")
    parser.add_argument("--batch-size", type=int, default=1024, help="rows per step per process (default 1024)")
    parser.add_argument("--nprocs", default="1,2", help="process counts to compare (default 1,2)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    from kfkit.config import compose
    from kfkit.data.prep import prepare
    from kfkit.training.launcher import train

    nprocs = [int(n) for n in args.nprocs.split(",")]
    results: dict[int, list[float]] = {n: [] for n in nprocs}
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-") as tmp:
        base = ["dataset=synthetic_fraud", f"dataset.n_rows={args.rows}", f"training.epochs={args.epochs}",
                f"training.batch_size={args.batch_size}", "training.log_every=1000"]  # fmt: skip
        started = time.perf_counter()
        prepared = prepare(compose(base).dataset, Path(tmp) / "prepared")
        print(
            f"prepared {args.rows:,} rows ({prepared.rows['train']:,} train) in {time.perf_counter() - started:.1f} s"
        )
        for repeat in range(args.repeats):
            for n in nprocs:  # alternate configurations so drift in machine load hits both alike
                cfg = compose([*base, f"training.nproc={n}"])
                summary = train(prepared.out_dir, cfg, Path(tmp) / f"model-{n}-{repeat}")
                epochs = summary["history"][1:] or summary["history"]
                rate = statistics.median(e["samples_per_s"] for e in epochs)
                results[n].append(rate)
                print(f"  run {repeat + 1}: nproc={n}  {rate:,.0f} samples/s (all processes)", flush=True)
    medians = {n: statistics.median(v) for n, v in results.items()}
    print(f"\nmachine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}")  # fmt: skip
    print("| processes | samples/s (median) | per process | vs 1 process |")
    print("|---|---|---|---|")
    for n, rate in medians.items():
        print(f"| {n} | {rate:,.0f} | {rate / n:,.0f} | {rate / medians[nprocs[0]]:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "runs": results, "medians": medians}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
