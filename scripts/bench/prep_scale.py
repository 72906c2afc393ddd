"""Prep and training at scale: wall time and peak memory (RSS of the whole process tree, JVM included).

Subcommands (run from the repository root with the main environment's python):

- ``make --rows N --out DIR``: write N synthetic fraud rows as Parquet shards (:mod:`kfkit.data.shards`).
- ``prep --engine pandas|spark --input DIR --out DIR``: run prep in a child process and report its wall
  time and peak RSS; ``--cap-gb`` runs the child under ``prlimit --as`` (an out-of-memory then ends it
  instead of the machine's memory), ``--timeout-s`` bounds it.
- ``train --prepared DIR --data memory|stream``: one epoch of single-process DDP training on a prepared
  folder, reporting samples/s (from training.json) and peak RSS.

Each prints one JSON line; ``--json FILE`` appends it there too. The measuring parent polls every 0.2 s
with psutil, so peaks shorter than that can be missed (the steady-state peaks of these runs are not). It
reports the peak RSS and the peak RssAnon (private memory, without mapped file pages) of the tree,
leaving out a child that is a fork of its parent not yet exec'd (Hadoop's local file system forks the
JVM to run chmod; counting that copy-on-write image again would double the JVM).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

POLL_S = 0.2


def measure(command: list[str], *, timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command``; return its exit status, wall seconds and the peak RSS of it and all its children."""
    import psutil

    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, start_new_session=True)
    parent, peak, peak_anon, timed_out = psutil.Process(process.pid), 0, 0, False
    try:
        while process.poll() is None:
            rss = anon = 0
            try:
                for proc in [parent, *parent.children(recursive=True)]:
                    try:
                        if proc is not parent and proc.cmdline() == proc.parent().cmdline():
                            continue  # a fork before its exec (Hadoop forks the JVM to run chmod): shared pages
                        rss += proc.memory_info().rss
                        anon += _anon_rss(proc.pid)
                    except (psutil.NoSuchProcess, OSError):
                        pass
            except psutil.NoSuchProcess:
                break
            peak, peak_anon = max(peak, rss), max(peak_anon, anon)
            if time.perf_counter() - started > timeout_s:
                timed_out = True
                break
            time.sleep(POLL_S)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        process.wait()
    seconds = round(time.perf_counter() - started, 1)
    return {"returncode": process.returncode, "timed_out": timed_out, "seconds": seconds,
            "peak_rss_gib": round(peak / 2**30, 2), "peak_anon_rss_gib": round(peak_anon / 2**30, 2)}  # fmt: skip


def _anon_rss(pid: int) -> int:
    """RssAnon of ``pid`` in bytes: its private memory, without the file pages it maps.

    A JVM maps the Parquet and shuffle files it reads (Spark memory-maps blocks over 2 MB); those pages
    count in RSS but are page cache the kernel reclaims, so RSS overstates what the process needs.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def _prep_child(args: argparse.Namespace) -> int:
    from kfkit.config import compose
    from kfkit.data.prep import prepare

    overrides = ["dataset=csv", f"dataset.path={args.input}", "dataset.label=is_fraud", "dataset.entity_column=card_id",
                 "dataset.timestamp_column=event_timestamp", f"data.engine={args.engine}",
                 f"data.spark.master='local[{args.cores}]'", f"data.spark.driver_memory={args.driver_memory}",
                 f"data.spark.shuffle_partitions={args.partitions}"]  # fmt: skip
    cfg = compose(overrides)
    result = prepare(cfg.dataset, args.out, data=cfg.data)
    print(json.dumps({"rows": result.rows}), flush=True)
    return 0


def _train_child(args: argparse.Namespace) -> int:
    from kfkit.config import compose
    from kfkit.training.launcher import train

    cfg = compose(["dataset=synthetic_fraud", f"training.data={args.data}", "training.nproc=1", "training.epochs=1",
                   f"training.batch_size={args.batch_size}", "training.early_stopping_patience=0",
                   "training.device=cpu"])  # fmt: skip
    summary = train(args.prepared, cfg, args.out)
    Path(args.out, "bench.json").write_text(json.dumps({"samples_per_s": summary["samples_per_s"],
                                                        "train_seconds": summary["train_seconds"]}))  # fmt: skip
    return 0


def _report(record: dict[str, Any], path: str | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    """Parse the subcommand and run it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make")
    make.add_argument("--rows", type=int, required=True)
    make.add_argument("--out", required=True)
    make.add_argument("--shard-rows", type=int, default=1_000_000)
    for name in ("prep", "prep-child"):
        prep = sub.add_parser(name)
        prep.add_argument("--engine", choices=("pandas", "spark"), required=True)
        prep.add_argument("--input", required=True)
        prep.add_argument("--out", required=True)
        prep.add_argument("--cores", type=int, default=2)
        prep.add_argument("--driver-memory", default="4g")
        prep.add_argument("--partitions", type=int, default=16)
        prep.add_argument("--cap-gb", type=float, default=None)
        prep.add_argument("--timeout-s", type=float, default=3600)
        prep.add_argument("--json", default=None)
    for name in ("train", "train-child"):
        train = sub.add_parser(name)
        train.add_argument("--prepared", required=True)
        train.add_argument("--data", choices=("memory", "stream"), required=True)
        train.add_argument("--out", required=True)
        train.add_argument("--batch-size", type=int, default=4096)
        train.add_argument("--timeout-s", type=float, default=1800)
        train.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.command == "prep-child":
        return _prep_child(args)
    if args.command == "train-child":
        return _train_child(args)
    me = [sys.executable, "-m", "scripts.bench.prep_scale"]
    if args.command == "make":
        from kfkit.data.shards import write_synthetic_shards

        started = time.perf_counter()
        files = write_synthetic_shards(args.out, n_rows=args.rows, shard_rows=args.shard_rows)
        size = sum(f.stat().st_size for f in files) / 2**30
        _report({"make_rows": args.rows, "seconds": round(time.perf_counter() - started, 1), "gib": round(size, 2)},
                None)  # fmt: skip
        return 0
    if args.command == "prep":
        shutil.rmtree(args.out, ignore_errors=True)
        command = [*me, "prep-child", "--engine", args.engine, "--input", args.input, "--out", args.out,
                   "--cores", str(args.cores), "--driver-memory", args.driver_memory,
                   "--partitions", str(args.partitions)]  # fmt: skip
        if args.cap_gb:
            command = ["prlimit", f"--as={int(args.cap_gb * 2**30)}", *command]
        record = measure(command, timeout_s=args.timeout_s, env={**os.environ, "OMP_NUM_THREADS": "1"})
        _report({"engine": args.engine, "input": args.input, "cap_gb": args.cap_gb, **record}, args.json)
        return 0
    shutil.rmtree(args.out, ignore_errors=True)
    command = [*me, "train-child", "--prepared", args.prepared, "--data", args.data, "--out", args.out,
               "--batch-size", str(args.batch_size)]  # fmt: skip
    record = measure(command, timeout_s=args.timeout_s, env={**os.environ, "OMP_NUM_THREADS": "1"})
    bench = Path(args.out, "bench.json")
    record |= json.loads(bench.read_text()) if bench.is_file() else {}
    _report({"data": args.data, "prepared": args.prepared, **record}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
