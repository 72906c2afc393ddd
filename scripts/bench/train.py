"""Training throughput: samples/s of 1 and 2 torchrun processes on the synthetic fraud data, side by side.

Usage: kfkit bench train [--rows 1000000] [--epochs 1] [--repeats 3] [--batch-size 1024|auto] [--nprocs 1,2|auto]
       (from a source checkout's root: python -m scripts.bench.train ...)

Prepares the data once (cached under .kfkit/bench), then runs 1-process and 2-process (gloo) training
alternately (1/2/1/2/...) so drift in machine load hits both alike, and reports per configuration the
median samples/s (all processes, and per process) of the timed epochs (the first is excluded when
there are several: it pays for warm-up), the scaling ratio, and PR-AUC/ROC-AUC of the trained model
on the test split. Prints a markdown table, the exact command and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .report import machine_line, train_table


def _prepared(rows: int, seed: int, cache: Path, base: list[str]):
    """The prepared splits, from the cache when an earlier run made them."""
    from kfkit.config import compose
    from kfkit.data.prep import load_prepared, prepare

    folder = cache / f"synthetic_fraud-{rows}-seed{seed}"
    if (folder / "schema.json").is_file():
        print(f"prepared data: {folder} (cached)", flush=True)
        return load_prepared(folder)
    started = time.perf_counter()
    prepared = prepare(compose(base).dataset, folder)
    print(f"prepared {rows:,} rows into {folder} in {time.perf_counter() - started:.1f} s", flush=True)
    return prepared


def _test_metrics(model_dir: Path, test_path: Path) -> dict[str, float]:
    import pandas as pd
    from sklearn.metrics import average_precision_score, roc_auc_score

    from kfkit.model import load_scorer

    score, spec = load_scorer(model_dir)
    frame = pd.read_parquet(test_path, columns=[*spec.feature_names, spec.label])
    scores = score(frame[spec.feature_names].to_numpy(dtype="float32"))
    return {
        "pr_auc": float(average_precision_score(frame[spec.label], scores)),
        "roc_auc": float(roc_auc_score(frame[spec.label], scores)),
    }


def build_parser(prog: str = "kfkit bench train") -> argparse.ArgumentParser:
    """The benchmark's options."""
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="synthetic rows (default 1,000,000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (default 3, at least 3)")
    parser.add_argument(
        "--batch-size",
        type=_int_or_auto,
        default=1024,
        help="rows per step per process (default 1024); auto: the pipeline's rule (a global batch of about rows/128)",
    )
    parser.add_argument(
        "--nprocs", default="1,2", help="process counts to compare (default 1,2); auto: what training.nproc=auto picks"
    )
    parser.add_argument("--seed", type=int, default=42, help="data and training seed (default 42)")
    parser.add_argument("--cache", default=".kfkit/bench", help="prepared data cache (default .kfkit/bench)")
    parser.add_argument(
        "--threads",
        type=int,
        help="intra-op threads per process (OMP_NUM_THREADS); default: training.threads=auto (1 per CPU process)",
    )
    parser.add_argument("--json", help="also write the results here")
    return parser


def _int_or_auto(text: str) -> int | str:
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of rows")
    return value


def main(argv: list[str] | None = None, *, prog: str = "kfkit bench train") -> int:
    """Run the benchmark and print its table; returns the exit status."""
    args = build_parser(prog).parse_args(argv)

    from kfkit.config import compose
    from kfkit.training.launcher import local_processes, train

    command = " ".join([prog, *(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))])
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the launcher keeps a value that is already set
    machine = machine_line()
    data = ["dataset=synthetic_fraud", f"dataset.n_rows={args.rows}", f"dataset.seed={args.seed}"]
    # auto is resolved as the pipeline resolves it, so the table shows the process count that ran.
    nprocs = list(
        dict.fromkeys(local_processes(compose([*data, f"training.nproc={n}"]))[0] for n in args.nprocs.split(","))
    )
    prepared = _prepared(args.rows, args.seed, Path(args.cache), data)
    base = [
        *data,
        f"training.epochs={args.epochs}",
        f"training.batch_size={args.batch_size}",
        f"training.seed={args.seed}",
        "training.log_every=1",
        "training.early_stopping_patience=0",
        "training.checkpoint_every_steps=0",  # one checkpoint per epoch, written outside the timed loop
    ]
    rates: dict[int, list[float]] = {n: [] for n in nprocs}
    batches: set[int] = set()
    quality: dict[int, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-") as tmp:
        for repeat in range(max(3, args.repeats)):
            for n in nprocs:
                cfg = compose([*base, f"training.nproc={n}"])
                model_dir = Path(tmp) / f"model-{n}-{repeat}"
                summary = train(prepared.out_dir, cfg, model_dir)
                batches.add(summary["batch_size"])
                epochs = summary["history"][1:] or summary["history"]
                rate = statistics.median(e["samples_per_s"] for e in epochs)
                rates[n].append(rate)
                quality[n] = _test_metrics(model_dir, prepared.split_path("test"))
                print(
                    f"  run {repeat + 1}: nproc={n}  {rate:,.0f} samples/s ({rate / n:,.0f} per process)  "
                    f"test pr_auc {quality[n]['pr_auc']:.4f}",
                    flush=True,
                )
    medians = {n: statistics.median(v) for n, v in rates.items()}
    resolved = "/".join(str(b) for b in sorted(batches))
    batch_label = f"auto = {resolved}" if args.batch_size == "auto" else str(args.batch_size)
    print(f"\ncommand: {command}")
    print(f"machine: {machine}")
    print(
        f"data: synthetic_fraud, {args.rows:,} rows ({prepared.rows['train']:,} train, "
        f"{prepared.rows['test']:,} test), {args.epochs} epoch(s), batch {batch_label} rows per process, "
        f"default MLP {compose(base).model.hidden_dims}, intra-op threads per process: "
        f"{args.threads or 'training.threads=auto (1 per CPU process)'}\n"
    )
    print(train_table(medians, rates, quality))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "command": command,
                    "machine": machine,
                    "rows": args.rows,
                    "epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "runs": rates,
                    "medians": medians,
                    "test": quality,
                },
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m scripts.bench.train"))
