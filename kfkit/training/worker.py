"""One torchrun worker: DDP training of the tabular MLP on a prepared dataset.

Started by :mod:`kfkit.training.launcher` as ``python -m torch.distributed.run ... -m kfkit.training.worker``;
rank, world size and local rank come from torchrun's environment. Every rank holds the whole training
split as tensors and trains on its shard of a per-epoch permutation; rank 0 alone validates, decides
early stopping (and tells the others), writes checkpoints, and writes the model.

Determinism: the weights depend only on the seed (initialisation), the data order only on (seed,
epoch), and dropout only on each rank's generator, whose state every checkpoint keeps. So a run killed
and resumed from its checkpoint ends with the same weights as one that was never interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import KfkitError, TrainingError

if TYPE_CHECKING:
    import torch

    from kfkit.config import KfkitConfig

__all__ = ["main", "TRAINING_SUMMARY_FILE", "ERROR_FILE"]

TRAINING_SUMMARY_FILE = "training.json"
# A worker that fails on purpose (a KfkitError) leaves its message here for the launcher to raise.
ERROR_FILE = "training-error.txt"


@dataclass
class _Progress:
    """Where training stands: what a checkpoint restores besides the model and optimizer."""

    epoch: int = 0
    """0-based epoch in progress."""
    step_in_epoch: int = 0
    """Optimizer steps already taken in that epoch."""
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _device_and_backend(device_choice: str, backend_choice: str) -> tuple[str, str]:
    import torch

    device = device_choice
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise TrainingError(
            f"training.device=cuda but torch {torch.__version__} sees no CUDA device here; "
            "use training.device=auto or cpu, or run on a GPU node"
        )
    backend = backend_choice if backend_choice != "auto" else ("nccl" if device == "cuda" else "gloo")
    if backend == "nccl" and device != "cuda":
        raise TrainingError("training.backend=nccl needs CUDA devices; use training.backend=gloo (or auto) on the CPU")
    return device, backend


def _fingerprint(cfg: KfkitConfig, *, world_size: int, precision: str, rows: int, features: list[str]) -> dict:
    """What must match for a checkpoint to continue this run exactly (log and timeout settings need not)."""
    t = cfg.training
    return {
        "world_size": world_size,
        "rows": rows,
        "features": list(features),
        "hidden_dims": list(cfg.model.hidden_dims),
        "dropout": cfg.model.dropout,
        "precision": precision,
        **{k: getattr(t, k) for k in ("epochs", "batch_size", "learning_rate", "weight_decay", "pos_weight", "seed")},
        "early_stopping_patience": t.early_stopping_patience,
    }


def main(argv: list[str] | None = None) -> int:
    """Train on ``--prepared`` with ``--config`` (a kfkit config JSON) and write the model to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="folder written by the prep step")
    parser.add_argument("--config", required=True, help="kfkit config as a JSON file")
    parser.add_argument("--out", required=True, help="folder for model.safetensors, model.json, training.json")
    args = parser.parse_args(argv)
    try:
        _train(Path(args.prepared), Path(args.config), Path(args.out))
    except KfkitError as e:
        # A failure we can explain: say it once, plainly, and leave it for the launcher.
        print(f"[train] rank {os.environ.get('RANK', 0)}: {e}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / ERROR_FILE).write_text(str(e) + "\n")
        return 1
    return 0


def _train(prepared_dir: Path, config_path: Path, out_dir: Path) -> None:
    import numpy as np
    import torch
    import torch.distributed as dist

    from kfkit.config import from_dict
    from kfkit.data.prep import load_prepared
    from kfkit.training.checkpoint import (
        CHECKPOINT_FILE,
        CHECKPOINT_FORMAT,
        checkpoint_dir,
        load_checkpoint,
        rng_state,
        save_checkpoint,
        set_rng_state,
    )
    from kfkit.training.data import epoch_indices, load_split, shard_size
    from kfkit.training.early_stopping import EarlyStopping
    from kfkit.training.precision import resolve_precision

    cfg = from_dict(json.loads(config_path.read_text()))
    tc = cfg.training
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device, backend = _device_and_backend(tc.device, tc.backend)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    precision, amp_dtype = resolve_precision(tc.precision, device)
    cuda = device.startswith("cuda")
    distributed = world_size > 1
    if distributed:
        # device_id binds NCCL to this rank's GPU up front (no guessing in barrier()); gloo takes none.
        dist.init_process_group(backend=backend, device_id=torch.device(device) if cuda else None)
    try:
        prepared = load_prepared(prepared_dir)
        features, label = prepared.feature_names, prepared.label
        x_train, y_train = load_split(prepared.split_path("train"), features, label, device)
        # Only rank 0 validates; the others learn its verdict through a broadcast.
        x_val, y_val = load_split(prepared.split_path("val"), features, label, device) if rank == 0 else (None, None)

        # Same seed on every rank: identical initial weights (DDP would broadcast rank 0's anyway).
        random.seed(tc.seed)
        np.random.seed(tc.seed)
        torch.manual_seed(tc.seed)
        from kfkit.model import build_model, spec_from_config

        spec = spec_from_config(cfg, features, label, world_size=world_size)

        model = build_model(spec).to(device)
        # Standardise with training-split statistics (every rank holds the whole split, so all agree).
        model.feature_mean.copy_(x_train.mean(0))
        model.feature_std.copy_(x_train.std(0).clamp_min(1e-6))
        # A different dropout stream per rank, reproducible from the seed.
        torch.manual_seed(tc.seed + 1 + rank)

        rows = len(y_train)
        positives = float(y_train.sum())
        pos_weight = tc.pos_weight or max(1.0, (rows - positives) / max(positives, 1.0))
        loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
        steps_per_epoch = math.ceil(shard_size(rows, world_size) / tc.batch_size)
        total_steps = tc.epochs * steps_per_epoch

        ckpt_path = checkpoint_dir(tc.checkpoint_dir, out_dir) / CHECKPOINT_FILE
        fingerprint = _fingerprint(cfg, world_size=world_size, precision=precision, rows=rows, features=features)
        checkpoint = load_checkpoint(ckpt_path)
        if checkpoint is not None:
            _check_fingerprint(checkpoint, fingerprint, ckpt_path)
            model.load_state_dict(checkpoint["model"])

        ddp_model = model
        if distributed:
            from torch.nn.parallel import DistributedDataParallel

            # forward_sync_buffers=False: the standardisation buffers are equal on every rank and never
            # change, so broadcasting them before each forward would be a wasted collective per step.
            ddp_model = DistributedDataParallel(
                model,
                device_ids=[local_rank] if cuda else None,
                forward_sync_buffers=False,
                gradient_as_bucket_view=True,
            )
        # fused AdamW: one kernel for all parameters (CPU and CUDA), the cheapest optimizer step for
        # a small model where per-step overhead, not arithmetic, is the cost.
        optimizer = torch.optim.AdamW(
            ddp_model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=True
        )
        # Cosine decay per optimizer step over the whole (maximum) run.
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
        scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
        stopper = EarlyStopping(patience=tc.early_stopping_patience)
        best_state: dict[str, torch.Tensor] | None = None
        progress = _Progress()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        samples_seen = 0
        resumed_from: int | None = None
        pending_rng: dict | None = None
        if checkpoint is not None:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler.load_state_dict(checkpoint["scheduler"])
            if scaler is not None and checkpoint.get("scaler"):
                scaler.load_state_dict(checkpoint["scaler"])
            stopper.load_state_dict(checkpoint["early_stopping"])
            best_state = checkpoint.get("best_state")
            progress = _Progress(
                epoch=checkpoint["epoch"],
                step_in_epoch=checkpoint["step_in_epoch"],
                global_step=checkpoint["global_step"],
                history=list(checkpoint["history"]),
            )
            mine = checkpoint["ranks"][rank]
            loss_sum.fill_(mine["loss_sum"])
            samples_seen = mine["samples_seen"]
            pending_rng = mine["rng"]
            resumed_from = progress.global_step
            if rank == 0:
                print(
                    f"[train] resuming from {ckpt_path}: epoch {progress.epoch + 1}/{tc.epochs}, "
                    f"step {progress.step_in_epoch}/{steps_per_epoch} (global step {progress.global_step})",
                    flush=True,
                )
            del checkpoint

        def write_checkpoint() -> None:
            # Every rank hands over its RNG states and partial loss; rank 0 writes the file.
            mine = {
                "rng": rng_state(device),
                "loss_sum": float(loss_sum.item()),
                "samples_seen": samples_seen,
            }
            ranks = [None] * world_size
            if distributed:
                dist.all_gather_object(ranks, mine)
            else:
                ranks = [mine]
            if rank == 0:
                save_checkpoint(
                    {
                        "format": CHECKPOINT_FORMAT,
                        "fingerprint": fingerprint,
                        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "early_stopping": stopper.state_dict(),
                        "best_state": best_state,
                        "epoch": progress.epoch,
                        "step_in_epoch": progress.step_in_epoch,
                        "global_step": progress.global_step,
                        "history": progress.history,
                        "ranks": ranks,
                    },
                    ckpt_path,
                )

        autocast = (
            (lambda: torch.autocast(device_type="cuda" if cuda else "cpu", dtype=amp_dtype))
            if amp_dtype is not None
            else contextlib.nullcontext
        )
        if rank == 0:
            print(
                f"[train] {world_size} process(es), {backend}, {device}, {precision}: {rows:,} training rows, "
                f"{steps_per_epoch} steps/epoch of {tc.batch_size} rows per process, pos_weight {pos_weight:.2f}"
                + (f", early stopping after {tc.early_stopping_patience} epochs" if stopper.enabled else ""),
                flush=True,
            )
        # Restoring the generators comes last: everything above (model init) must not consume them.
        if pending_rng is not None:
            set_rng_state(pending_rng, device)
        start = time.perf_counter()
        train_seconds = 0.0
        stop = bool(progress.history) and stopper.should_stop
        while progress.epoch < tc.epochs and not stop:
            epoch = progress.epoch
            _sync(device)
            epoch_start = time.perf_counter()  # the per-epoch gather below counts as training time
            order = epoch_indices(rows, seed=tc.seed, epoch=epoch, rank=rank, world_size=world_size).to(device)
            # One gather per epoch, then every batch is a contiguous view: no per-step indexing copy.
            x_epoch, y_epoch = x_train.index_select(0, order), y_train.index_select(0, order)
            ddp_model.train()
            processed = 0
            for step in range(progress.step_in_epoch, steps_per_epoch):
                begin = step * tc.batch_size
                xb, yb = x_epoch[begin : begin + tc.batch_size], y_epoch[begin : begin + tc.batch_size]
                optimizer.zero_grad(set_to_none=True)
                with autocast():
                    logits = ddp_model(xb)
                loss = loss_fn(logits.float(), yb)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(yb)
                samples_seen += len(yb)
                processed += len(yb)
                progress.step_in_epoch = step + 1
                progress.global_step += 1
                if tc.checkpoint_every_steps and progress.global_step % tc.checkpoint_every_steps == 0:
                    write_checkpoint()
            _sync(device)
            elapsed = time.perf_counter() - epoch_start
            train_seconds += elapsed
            counts = torch.tensor([samples_seen, processed], dtype=torch.float64, device=device)
            totals = torch.cat([loss_sum.reshape(1), counts])
            if distributed:
                dist.all_reduce(totals)

            # Rank 0 validates and decides; one broadcast keeps every rank's history and verdict equal.
            verdict = torch.zeros(3, dtype=torch.float64, device=device)
            if rank == 0:
                val_loss, val_pr_auc = _validate(model, loss_fn, x_val, y_val)
                improved = stopper.update(epoch + 1, val_pr_auc, val_loss)
                if improved and stopper.enabled:
                    best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                verdict = torch.tensor(
                    [val_loss, val_pr_auc, float(stopper.should_stop)], dtype=torch.float64, device=device
                )
            if distributed:
                dist.broadcast(verdict, src=0)
            val_loss, val_pr_auc, stop = float(verdict[0]), float(verdict[1]), bool(verdict[2])
            rate = float(totals[2]) / max(elapsed, 1e-9)
            record = {
                "epoch": epoch + 1,
                "train_loss": float(totals[0] / max(float(totals[1]), 1.0)),
                "val_loss": val_loss,
                "val_pr_auc": val_pr_auc,
                "lr": float(scheduler.get_last_lr()[0]),
                "samples_per_s": rate,
                "samples_per_s_per_process": rate / world_size,
                "seconds": elapsed,
            }
            progress.history.append(record)
            progress.epoch, progress.step_in_epoch = epoch + 1, 0
            loss_sum.zero_()
            samples_seen = 0
            if rank == 0 and _should_log(epoch + 1, tc.epochs, tc.log_every, stop):
                print(
                    f"[train] epoch {epoch + 1:>3}/{tc.epochs}  train_loss {record['train_loss']:.4f}  "
                    f"val_loss {val_loss:.4f}  val_pr_auc {val_pr_auc:.4f}  {rate:,.0f} samples/s "
                    f"({rate / world_size:,.0f} per process, {world_size} proc, {backend}, {precision})",
                    flush=True,
                )
            if stop and rank == 0:
                print(
                    f"[train] early stop after epoch {epoch + 1}: no better val_pr_auc for "
                    f"{tc.early_stopping_patience} epochs; keeping epoch {stopper.best_epoch} "
                    f"(val_pr_auc {stopper.best_score:.4f})",
                    flush=True,
                )
            if not tc.checkpoint_every_steps:
                write_checkpoint()

        if rank == 0:
            _finish(
                model,
                spec,
                out_dir,
                best_state=best_state if stopper.enabled else None,
                ckpt_path=ckpt_path,
                summary={
                    "world_size": world_size,
                    "backend": backend,
                    "device": device,
                    "precision": precision,
                    "pos_weight": pos_weight,
                    "batch_size": tc.batch_size,
                    "seconds": time.perf_counter() - start,
                    "train_seconds": train_seconds,
                    "best_epoch": stopper.best_epoch if stopper.enabled else len(progress.history),
                    "best_val_pr_auc": stopper.best_score if stopper.enabled else progress.history[-1]["val_pr_auc"],
                    "stopped_early": stopper.should_stop,
                    "resumed_from_step": resumed_from,
                    "history": progress.history,
                },
            )
        if distributed:
            dist.barrier()
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def _finish(
    model: torch.nn.Module,
    spec: Any,
    out_dir: Path,
    *,
    best_state: dict | None,
    ckpt_path: Path,
    summary: dict,
) -> None:
    """Rank 0: keep the best epoch's weights, write weights, exported graph and summary, drop the checkpoint."""
    from kfkit.model import EXPORT_FILE, export_model, save_model

    model = model.cpu()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    out = save_model(model, spec, out_dir)
    started = time.perf_counter()
    export_model(model, out)
    summary["export"] = {"file": EXPORT_FILE, "seconds": time.perf_counter() - started}
    history = summary["history"]
    summary["samples_per_s"] = sum(h["samples_per_s"] * h["seconds"] for h in history) / max(
        sum(h["seconds"] for h in history), 1e-9
    )
    (out / TRAINING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    # The model is written: the checkpoint has done its job, and a rerun should train afresh.
    ckpt_path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        ckpt_path.parent.rmdir()  # only when empty: never remove what the user keeps there
    print(
        f"[train] wrote {out} (epoch {summary['best_epoch']} weights, {EXPORT_FILE} exported "
        f"in {summary['export']['seconds']:.1f} s)",
        flush=True,
    )


def _validate(model: torch.nn.Module, loss_fn: Any, x_val: torch.Tensor, y_val: torch.Tensor) -> tuple[float, float]:
    """Validation loss and PR-AUC in fp32 (the precision the exported model serves in)."""
    import torch

    from kfkit.training.metrics import average_precision

    was_training = model.training
    model.eval()
    with torch.inference_mode():
        logits = model(x_val)
        loss = float(loss_fn(logits, y_val))
        pr_auc = average_precision(y_val, logits)  # a monotone transform of the scores: same ranking
    model.train(was_training)
    return loss, pr_auc


def _check_fingerprint(checkpoint: dict, fingerprint: dict, path: Path) -> None:
    found = checkpoint.get("fingerprint", {})
    differ = {k: (found.get(k), v) for k, v in fingerprint.items() if found.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: checkpoint {_short(old)} vs now {_short(new)}" for k, (old, new) in differ.items())
        raise TrainingError(
            f"{path} was written by a different training run ({detail}); delete it to train from scratch, "
            "or set training.checkpoint_dir to another folder"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _sync(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _should_log(epoch: int, epochs: int, every: int, stop: bool) -> bool:
    return epoch in (1, epochs) or stop or epoch % max(1, every) == 0


if __name__ == "__main__":
    sys.exit(main())
