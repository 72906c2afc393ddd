"""Launch training: torchrun with N local processes running :mod:`kfkit.training.worker`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import TrainingError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["train", "torchrun_command"]


def torchrun_command(prepared_dir: str | Path, config_path: str | Path, out_dir: str | Path, nproc: int) -> list[str]:
    """The torchrun command line; ``--standalone`` picks a free rendezvous port on this node."""
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--standalone", f"--nproc_per_node={nproc}",
        "-m", "kfkit.training.worker",
        "--prepared", str(prepared_dir), "--config", str(config_path), "--out", str(out_dir),
    ]  # fmt: skip


def train(prepared_dir: str | Path, cfg: KfkitConfig, out_dir: str | Path) -> dict:
    """Run distributed training and return the training summary (history, samples/s, backend).

    Raises:
        TrainingError: a worker failed, training timed out, or no model was written.
    """
    from kfkit.config import to_dict
    from kfkit.training.worker import TRAINING_SUMMARY_FILE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config_path = out.parent / f"{out.name}.config.json"
    config_path.write_text(json.dumps(to_dict(cfg), indent=2))
    command = torchrun_command(prepared_dir, config_path, out, cfg.training.nproc)
    env = dict(os.environ)
    # One BLAS thread per worker: with N workers on N cores, more threads only contend.
    env.setdefault("OMP_NUM_THREADS", "1" if cfg.training.nproc > 1 else str(os.cpu_count() or 1))
    env["PYTHONUNBUFFERED"] = "1"
    print(f"[train] torchrun --nproc_per_node={cfg.training.nproc} (backend {cfg.training.backend})", flush=True)
    try:
        completed = subprocess.run(command, env=env, timeout=cfg.training.timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise TrainingError(
            f"training ran past training.timeout_s={cfg.training.timeout_s}s; raise it or train less"
        ) from e
    finally:
        config_path.unlink(missing_ok=True)
    summary_path = out / TRAINING_SUMMARY_FILE
    if completed.returncode != 0 or not summary_path.is_file():
        raise TrainingError(f"torchrun exited with status {completed.returncode}; the worker output above says why")
    return json.loads(summary_path.read_text())
