"""Launch training: torchrun with N local processes running :mod:`kfkit.training.worker` (or the TF trainer)."""

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

__all__ = ["train", "torchrun_command", "local_processes"]


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

    A checkpoint left in ``training.checkpoint_dir`` (default ``<out_dir>.ckpt``) by a killed run is
    resumed from; it is removed once the model is written.

    Raises:
        ConfigError: a precision the device cannot train in (fp16 on the CPU).
        TrainingError: a worker failed, training timed out, or no model was written.
    """
    if cfg.model.framework == "tensorflow":
        from kfkit.training.tf_trainer import train_tf  # TensorFlow is heavy: only for TF runs

        return train_tf(prepared_dir, cfg, out_dir)
    from kfkit.config import to_dict
    from kfkit.training.checkpoint import CHECKPOINT_FILE, checkpoint_dir
    from kfkit.training.outputs import ERROR_FILE, TRAINING_SUMMARY_FILE

    _check_precision(cfg)
    nproc, threads = local_processes(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ERROR_FILE).unlink(missing_ok=True)
    config_path = out.parent / f"{out.name}.config.json"
    config_path.write_text(json.dumps(to_dict(cfg), indent=2))
    command = torchrun_command(prepared_dir, config_path, out, nproc)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    checkpoint = checkpoint_dir(cfg.training.checkpoint_dir, out) / CHECKPOINT_FILE
    print(
        f"[train] torchrun --nproc_per_node={nproc}{' (auto)' if cfg.training.nproc == 'auto' else ''}, "
        f"{threads} thread(s) each (backend {cfg.training.backend}); checkpoints in {checkpoint.parent}"
        + (" (found one: resuming)" if checkpoint.is_file() else ""),
        flush=True,
    )
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
        error_path = out / ERROR_FILE
        if error_path.is_file():
            raise TrainingError(error_path.read_text().strip())
        raise TrainingError(f"torchrun exited with status {completed.returncode}; the worker output above says why")
    return json.loads(summary_path.read_text())


def local_processes(cfg: KfkitConfig) -> tuple[int, int]:
    """Processes torchrun starts here and intra-op threads per process: ``training.nproc`` and ``training.threads``.

    ``auto`` follows :func:`kfkit.training.plan.resolve_nproc` (one per visible GPU on CUDA, one on the
    CPU) and :func:`kfkit.training.plan.resolve_threads` (one per CPU process unless ``OMP_NUM_THREADS``
    is set).
    """
    from kfkit.training.plan import AUTO, resolve_nproc, resolve_threads

    tc = cfg.training
    cuda_devices = None
    if tc.device != "cpu" and AUTO in (tc.nproc, tc.threads):
        import torch  # only torch knows what CUDA sees (CUDA_VISIBLE_DEVICES included)

        cuda_devices = torch.cuda.device_count()
    nproc = resolve_nproc(tc, cuda_devices=cuda_devices)
    cuda = tc.device == "cuda" or bool(tc.device == "auto" and cuda_devices)
    return nproc, resolve_threads(tc, nproc=nproc, cuda=cuda)


def _check_precision(cfg: KfkitConfig) -> None:
    """Refuse fp16 on the CPU here, before torchrun starts, rather than in every worker."""
    from kfkit.training.precision import check_precision

    if cfg.training.precision != "fp16":
        return
    device = cfg.training.device
    if device == "auto":
        import torch  # only for fp16 runs: whether auto means CUDA

        device = "cuda" if torch.cuda.is_available() else "cpu"
    check_precision(cfg.training.precision, device)
