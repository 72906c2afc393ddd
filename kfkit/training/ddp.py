"""The PyTorch DDP trainer: one rank's training of the tabular MLP on a prepared dataset, phase by phase.

Every rank holds the whole training split as tensors (``training.data=memory``), or streams only the row
groups its share of the epoch covers (``training.data=stream``, :func:`kfkit.training.data.stream_batches`),
and trains on its share of a per-epoch order that both modes share; rank 0 alone validates, decides early
stopping (and tells the others), writes checkpoints, and writes the model. :mod:`kfkit.training.worker` runs
it in each process torchrun starts.

Determinism: the weights depend only on the seed (initialisation), the data order only on (seed,
epoch), and dropout only on each rank's generator, whose state every checkpoint keeps. So a run killed
and resumed from its checkpoint ends with the same weights as one that was never interrupted.

About 500 lines, past the usual 400: the phases share one state and one order of random draws, which is
easiest to check when it reads top to bottom in one class.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from kfkit.config import KfkitConfig

__all__ = ["DDPTrainer"]


@dataclass
class _Progress:
    """Where training stands: what a checkpoint restores besides the model and optimizer."""

    epoch: int = 0
    """0-based epoch in progress."""
    step_in_epoch: int = 0
    """Optimizer steps already taken in that epoch."""
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


class DDPTrainer:
    """One rank's share of a DDP run, in phases that :meth:`run` calls in order.

    ``setup`` (process group, device, data, seeded model, optimizer), ``restore`` (from a checkpoint,
    if one is left), then per epoch ``train_epoch``, ``validate_and_broadcast`` and ``checkpoint``
    (also every ``training.checkpoint_every_steps`` steps inside ``train_epoch``), and ``finish``
    (rank 0 writes the model). The order of the phases is the order random numbers are drawn in:
    changing it changes the weights, and breaks resuming a killed run to the same result.
    """

    def __init__(self, cfg: KfkitConfig, prepared_dir: Path, out_dir: Path) -> None:
        self.cfg, self.tc = cfg, cfg.training
        self.prepared_dir, self.out_dir = prepared_dir, out_dir
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.distributed = self.world_size > 1
        self.progress = _Progress()
        self.best_state: dict[str, torch.Tensor] | None = None
        """Rank 0, with training.restore_best_weights: the best validation epoch's weights so far (CPU)."""
        self.samples_seen = 0
        """Rows this rank trained on in the epoch in progress (with ``loss_sum``: its mean loss)."""
        self.resumed_from: int | None = None
        self.started = 0.0
        """perf_counter() when the first epoch (of this process) began."""
        self.train_seconds = 0.0

    def run(self) -> None:
        """Train to the last epoch (or an early stop) and write the model; always leave the process group."""
        try:
            self.setup()
            self.restore()
            self._announce()
            self.started = time.perf_counter()
            stop = bool(self.progress.history) and self.stopper.should_stop
            while self.progress.epoch < self.tc.epochs and not stop:
                elapsed, train_loss, rate = self.train_epoch()
                val_loss, val_pr_auc, stop = self.validate_and_broadcast()
                self._end_epoch(elapsed, train_loss, rate, val_loss, val_pr_auc, stop)
                if not self.tc.checkpoint_every_steps:
                    self.checkpoint()
            self.finish()
        finally:
            self.close()

    def setup(self) -> None:
        """Phase 1: process group, device and precision, the splits, the seeded model, loss and optimizer."""
        import numpy as np
        import torch
        import torch.distributed as dist

        from kfkit.data.prep import load_prepared
        from kfkit.model import build_model, spec_from_config
        from kfkit.training.checkpoint import CHECKPOINT_FILE, checkpoint_dir, run_fingerprint
        from kfkit.training.data import (
            feature_moments,
            load_split,
            positive_weight,
            row_group_sizes,
            shard_size,
            streamed_moments,
        )
        from kfkit.training.early_stopping import EarlyStopping
        from kfkit.training.plan import plan_training
        from kfkit.training.precision import device_and_backend, resolve_precision

        tc, rank = self.tc, self.rank
        device, self.backend = device_and_backend(tc.device, tc.backend)
        if device == "cuda":
            torch.cuda.set_device(self.local_rank)
            device = f"cuda:{self.local_rank}"
        self.device = device
        self.precision, amp_dtype = resolve_precision(tc.precision, device)
        cuda = device.startswith("cuda")
        if self.distributed:
            # device_id binds NCCL to this rank's GPU up front (no guessing in barrier()); gloo takes none.
            dist.init_process_group(backend=self.backend, device_id=torch.device(device) if cuda else None)

        prepared = load_prepared(self.prepared_dir)
        features, label = prepared.feature_names, prepared.label
        self.features, self.label, self.train_path = features, label, prepared.split_path("train")
        # The epoch order follows the row groups and the buffer, in both modes (so both train alike).
        self.row_groups = row_group_sizes(self.train_path)
        self.buffer_rows = self.cfg.data.shuffle_buffer_rows
        self.stream = tc.data == "stream"
        if self.stream:  # the split stays on disk; each epoch reads this rank's row groups
            self.x_train = self.y_train = None
        else:
            self.x_train, self.y_train = load_split(self.train_path, features, label, device)
        # Only rank 0 validates; the others learn its verdict through a broadcast.
        self.x_val, self.y_val = (
            load_split(prepared.split_path("val"), features, label, device) if rank == 0 else (None, None)
        )
        # The auto settings follow the splits (the same on every rank: they read the same schema).
        self.plan = plan_training(
            tc,
            train_rows=prepared.rows["train"],
            val_rows=prepared.rows["val"],
            val_positives=prepared.positives["val"],
            world_size=self.world_size,
        )
        self.cfg = self.plan.apply(self.cfg)
        self.tc = tc = self.cfg.training

        # Same seed on every rank: identical initial weights (DDP would broadcast rank 0's anyway).
        random.seed(tc.seed)
        np.random.seed(tc.seed)
        torch.manual_seed(tc.seed)
        self.spec = spec_from_config(self.cfg, features, label, world_size=self.world_size)
        self.model = model = build_model(self.spec).to(device)
        # Standardise with training-split statistics, in float64 over the row groups whichever the mode
        # (every rank reads the same rows, so all agree, and memory and stream agree bit for bit).
        if self.stream:
            mean, std = streamed_moments(self.train_path, features)
        else:
            x_cpu = self.x_train.cpu().numpy()
            bounds = [0, *itertools.accumulate(self.row_groups)]
            mean, std = feature_moments(x_cpu[a:b] for a, b in itertools.pairwise(bounds))
        model.feature_mean.copy_(torch.from_numpy(mean).float())
        model.feature_std.copy_(torch.from_numpy(std).float().clamp_min(1e-6))
        # A different dropout stream per rank, reproducible from the seed.
        torch.manual_seed(tc.seed + 1 + rank)

        self.rows = rows = prepared.rows["train"]
        self.pos_weight = positive_weight(prepared.positives["train"], tc.pos_weight, rows=rows)
        self.loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(self.pos_weight, device=device))
        self.steps_per_epoch = math.ceil(shard_size(rows, self.world_size) / tc.batch_size)
        self.ckpt_path = checkpoint_dir(tc.checkpoint_dir, self.out_dir) / CHECKPOINT_FILE
        self.fingerprint = run_fingerprint(
            self.cfg,
            world_size=self.world_size,
            precision=self.precision,
            rows=rows,
            features=features,
            order={"row_groups": self.row_groups, "buffer_rows": self.buffer_rows},
        )

        self.ddp_model = model
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # forward_sync_buffers=False: the standardisation buffers are equal on every rank and never
            # change, so broadcasting them before each forward would be a wasted collective per step.
            self.ddp_model = DistributedDataParallel(
                model,
                device_ids=[self.local_rank] if cuda else None,
                forward_sync_buffers=False,
                gradient_as_bucket_view=True,
            )
        # fused AdamW: one kernel for all parameters (CPU and CUDA), the cheapest optimizer step for
        # a small model where per-step overhead, not arithmetic, is the cost.
        self.optimizer = torch.optim.AdamW(
            self.ddp_model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay, fused=True
        )
        # Cosine decay per optimizer step over the whole (maximum) run.
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            self.optimizer, T_max=max(1, tc.epochs * self.steps_per_epoch)
        )
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.stopper = EarlyStopping(patience=tc.early_stopping_patience)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.autocast = (
            (lambda: torch.autocast(device_type="cuda" if cuda else "cpu", dtype=amp_dtype))
            if amp_dtype is not None
            else contextlib.nullcontext
        )

    def restore(self) -> None:
        """Phase 2: continue from the checkpoint a killed run of the same config left, if there is one.

        Raises:
            TrainingError: the checkpoint is unreadable or was written by a different run.
        """
        from kfkit.training.checkpoint import check_fingerprint, load_checkpoint, set_rng_state

        checkpoint = load_checkpoint(self.ckpt_path)
        if checkpoint is None:
            return
        check_fingerprint(checkpoint, self.fingerprint, self.ckpt_path)
        # In place: DDP and the optimizer hold these very parameters, and every rank loads the same values.
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.stopper.load_state_dict(checkpoint["early_stopping"])
        self.best_state = checkpoint.get("best_state")
        progress = self.progress = _Progress(
            epoch=checkpoint["epoch"],
            step_in_epoch=checkpoint["step_in_epoch"],
            global_step=checkpoint["global_step"],
            history=list(checkpoint["history"]),
        )
        mine = checkpoint["ranks"][self.rank]
        self.loss_sum.fill_(mine["loss_sum"])
        self.samples_seen = mine["samples_seen"]
        self.resumed_from = progress.global_step
        if self.rank == 0:
            print(
                f"[train] resuming from {self.ckpt_path}: epoch {progress.epoch + 1}/{self.tc.epochs}, "
                f"step {progress.step_in_epoch}/{self.steps_per_epoch} (global step {progress.global_step})",
                flush=True,
            )
        # Restoring the generators comes last: everything before (model init) must not consume them.
        set_rng_state(mine["rng"], self.device)

    def train_epoch(self) -> tuple[float, float, float]:
        """Phase 3: the rest of the epoch in progress on this rank's shard.

        Returns:
            Seconds it took, and over all ranks the epoch's mean training loss and samples per second.
        """
        import torch
        import torch.distributed as dist

        tc, progress, device = self.tc, self.progress, self.device
        _sync(device)
        epoch_start = time.perf_counter()  # the per-epoch gather (or the reads) count as training time
        model, optimizer, scaler = self.ddp_model, self.optimizer, self.scaler
        model.train()
        processed = 0
        batches = self._batches()
        for step in range(progress.step_in_epoch, self.steps_per_epoch):
            xb, yb = next(batches)
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                logits = model(xb)
            loss = self.loss_fn(logits.float(), yb)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            self.scheduler.step()
            self.loss_sum += loss.detach() * len(yb)
            self.samples_seen += len(yb)
            processed += len(yb)
            progress.step_in_epoch = step + 1
            progress.global_step += 1
            if tc.checkpoint_every_steps and progress.global_step % tc.checkpoint_every_steps == 0:
                self.checkpoint()
        _sync(device)
        elapsed = time.perf_counter() - epoch_start
        self.train_seconds += elapsed
        counts = torch.tensor([self.samples_seen, processed], dtype=torch.float64, device=device)
        totals = torch.cat([self.loss_sum.reshape(1), counts])
        if self.distributed:
            dist.all_reduce(totals)
        return elapsed, float(totals[0] / max(float(totals[1]), 1.0)), float(totals[2]) / max(elapsed, 1e-9)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The rest of this epoch's batches on this rank: streamed from disk, or slices of one gather."""
        from kfkit.training.data import epoch_order, stream_batches

        tc, progress = self.tc, self.progress
        where = {"seed": tc.seed, "epoch": progress.epoch, "rank": self.rank, "world_size": self.world_size,
                 "buffer_rows": self.buffer_rows}  # fmt: skip
        if self.stream:
            yield from stream_batches(self.train_path, self.features, self.label, batch_size=tc.batch_size,
                                      start_step=progress.step_in_epoch, device=self.device, **where)  # fmt: skip
            return
        order = epoch_order(self.row_groups, **where).to(self.device)
        # One gather per epoch, then every batch is a contiguous view: no per-step indexing copy.
        x_epoch, y_epoch = self.x_train.index_select(0, order), self.y_train.index_select(0, order)
        for step in range(progress.step_in_epoch, self.steps_per_epoch):
            begin = step * tc.batch_size
            yield x_epoch[begin : begin + tc.batch_size], y_epoch[begin : begin + tc.batch_size]

    def validate_and_broadcast(self) -> tuple[float, float, bool]:
        """Phase 4: rank 0 validates and decides on early stopping; one broadcast gives every rank its verdict.

        Returns:
            Validation loss, validation PR-AUC, and whether to stop now (equal on every rank).
        """
        import torch
        import torch.distributed as dist

        from kfkit.training.metrics import validate

        verdict = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.rank == 0:
            val_loss, val_pr_auc = validate(self.model, self.loss_fn, self.x_val, self.y_val)
            improved = self.stopper.update(self.progress.epoch + 1, val_pr_auc, val_loss)
            if improved and self.tc.restore_best_weights:
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            verdict = torch.tensor(
                [val_loss, val_pr_auc, float(self.stopper.should_stop)], dtype=torch.float64, device=self.device
            )
        if self.distributed:
            dist.broadcast(verdict, src=0)
        return float(verdict[0]), float(verdict[1]), bool(verdict[2])

    def checkpoint(self) -> None:
        """Phase 5: every rank hands over its RNG states and partial loss; rank 0 writes the checkpoint."""
        import torch.distributed as dist

        from kfkit.training.checkpoint import CHECKPOINT_FORMAT, rng_state, save_checkpoint

        mine = {
            "rng": rng_state(self.device),
            "loss_sum": float(self.loss_sum.item()),
            "samples_seen": self.samples_seen,
        }
        ranks = [None] * self.world_size
        if self.distributed:
            dist.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        if self.rank != 0:
            return
        progress = self.progress
        save_checkpoint(
            {
                "format": CHECKPOINT_FORMAT,
                "fingerprint": self.fingerprint,
                "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "early_stopping": self.stopper.state_dict(),
                "best_state": self.best_state,
                "epoch": progress.epoch,
                "step_in_epoch": progress.step_in_epoch,
                "global_step": progress.global_step,
                "history": progress.history,
                "ranks": ranks,
            },
            self.ckpt_path,
        )

    def finish(self) -> None:
        """Phase 6: rank 0 keeps the best epoch's weights, writes model, graph and summary, drops the checkpoint."""
        import torch.distributed as dist

        from kfkit.model import EXPORT_FILE, export_model, save_model
        from kfkit.training.outputs import TRAINING_SUMMARY_FILE

        if self.rank == 0:
            stopper, history, plan = self.stopper, self.progress.history, self.plan
            keep_best = self.tc.restore_best_weights and self.best_state is not None
            published = stopper.best_epoch if keep_best else len(history)
            summary = {
                "world_size": self.world_size,
                "backend": self.backend,
                "device": self.device,
                "precision": self.precision,
                "pos_weight": self.pos_weight,
                "batch_size": self.tc.batch_size,
                "settings": plan.settings(),
                "seconds": time.perf_counter() - self.started,
                "train_seconds": self.train_seconds,
                "epochs_run": len(history),
                "best_epoch": stopper.best_epoch or len(history),
                "best_val_pr_auc": stopper.best_score if stopper.best_epoch else history[-1]["val_pr_auc"],
                "published_epoch": published,
                "stopped_early": stopper.should_stop,
                "resumed_from_step": self.resumed_from,
                "history": history,
            }
            model = self.model.cpu()
            if keep_best:
                model.load_state_dict(self.best_state)
            model.eval()
            out = save_model(model, self.spec, self.out_dir)
            started = time.perf_counter()
            export_model(model, out)
            summary["export"] = {"file": EXPORT_FILE, "seconds": time.perf_counter() - started}
            summary["samples_per_s"] = sum(h["samples_per_s"] * h["seconds"] for h in history) / max(
                sum(h["seconds"] for h in history), 1e-9
            )
            (out / TRAINING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
            # The model is written: the checkpoint has done its job, and a rerun should train afresh.
            self.ckpt_path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.ckpt_path.parent.rmdir()  # only when empty: never remove what the user keeps there
            record = history[published - 1] if published else {}
            which = (
                f"the best validation epoch of {len(history)}, val_pr_auc {record['val_pr_auc']:.4f}"
                if keep_best
                else "the last epoch"
            )
            print(
                f"[train] wrote {out}: epoch {published} weights ({which}), {EXPORT_FILE} exported "
                f"in {summary['export']['seconds']:.1f} s",
                flush=True,
            )
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (whatever phase failed)."""
        import torch.distributed as dist

        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()

    def _announce(self) -> None:
        if self.rank == 0:
            tc = self.tc
            if line := self.plan.describe(self.rows, self.world_size):
                print(line, flush=True)
            print(
                f"[train] {self.world_size} process(es), {self.backend}, {self.device}, {self.precision}: "
                f"{self.rows:,} training rows, {self.steps_per_epoch} steps/epoch of {tc.batch_size} rows per "
                f"process, pos_weight {self.pos_weight:.2f}"
                + (f", early stopping after {tc.early_stopping_patience} epochs" if self.stopper.enabled else ""),
                flush=True,
            )

    def _end_epoch(
        self, seconds: float, train_loss: float, rate: float, val_loss: float, val_pr_auc: float, stop: bool
    ) -> None:
        """Record the epoch in the history, move on to the next one, and log it."""
        tc, progress, epoch = self.tc, self.progress, self.progress.epoch
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_pr_auc": val_pr_auc,
            "lr": float(self.scheduler.get_last_lr()[0]),
            "samples_per_s": rate,
            "samples_per_s_per_process": rate / self.world_size,
            "seconds": seconds,
        }
        progress.history.append(record)
        progress.epoch, progress.step_in_epoch = epoch + 1, 0
        self.loss_sum.zero_()
        self.samples_seen = 0
        if self.rank != 0:
            return
        if _should_log(epoch + 1, tc.epochs, tc.log_every, stop):
            print(
                f"[train] epoch {epoch + 1:>3}/{tc.epochs}  train_loss {train_loss:.4f}  "
                f"val_loss {val_loss:.4f}  val_pr_auc {val_pr_auc:.4f}  {rate:,.0f} samples/s "
                f"({rate / self.world_size:,.0f} per process, {self.world_size} proc, {self.backend}, "
                f"{self.precision})",
                flush=True,
            )
        if stop:
            print(
                f"[train] early stop after epoch {epoch + 1}: no better val_pr_auc for "
                f"{tc.early_stopping_patience} epochs; the best was epoch {self.stopper.best_epoch} "
                f"(val_pr_auc {self.stopper.best_score:.4f})",
                flush=True,
            )


def _sync(device: str) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def _should_log(epoch: int, epochs: int, every: int, stop: bool) -> bool:
    return epoch in (1, epochs) or stop or epoch % max(1, every) == 0
