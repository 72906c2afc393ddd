"""The ``auto`` training settings resolved: from the training split's size, the validation split, and the machine.

The rule (documented in configs/training/default.yaml; measured in docs/benchmarks.md, training section):

- **batch**: about 128 optimizer steps per epoch: the global batch is the power of two nearest
  ``rows / 128``, between 128 and 4096 (split evenly over the processes). 369 breast-cancer rows train
  in batches of 128, 13,000 rows in 128, 130,000 in 1024, 650,000 in 4096.
- **learning rate**: ``3e-3 * sqrt(global batch / 128)`` (Adam's square-root scaling): 3e-3 at 128,
  8.5e-3 at 1024, 0.017 at 4096.
- **epochs**: enough for about 2,000 optimizer steps, at least 3 and at most 60: 60 on breast cancer
  (3 steps an epoch), 20 on 13,000 rows, 16 on 130,000, 13 on 650,000. The cosine schedule spans them.
- **early stopping**: patience 5 when the validation split holds at least 100 rows of its rarer class;
  off below that, where one epoch's PR-AUC differs from the next by noise and stopping keeps an
  under-trained model (breast cancer: 32 positive validation rows; patience 20 gave test accuracy 0.96
  for one seed in four). The best epoch's weights are published either way (``restore_best_weights``).
- **processes** (``training.nproc``): one per visible GPU on CUDA; one on the CPU, where every step's gloo
  all-reduce costs more than the arithmetic it shares for kfkit's small MLPs.
- **threads** (``training.threads``): one per CPU process (an ``OMP_NUM_THREADS`` already set wins). A
  step of these MLPs is too small to split: a second thread gains little on an idle machine and, when
  another process holds a core, OpenMP workers spin waiting for a descheduled one (27x slower here).

Whatever is set explicitly (an int or float) is used as given; ``batch_size`` is then per process.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig, TrainingConfig

__all__ = [
    "AUTO",
    "TrainingPlan",
    "plan_training",
    "auto_global_batch",
    "auto_learning_rate",
    "auto_epochs",
    "auto_patience",
    "resolve_nproc",
    "pod_nproc",
    "resolve_threads",
]

AUTO = "auto"
STEPS_PER_EPOCH = 128
"""Target optimizer steps per epoch of the automatic batch size."""
MIN_BATCH, MAX_BATCH = 128, 4096
"""Bounds of the automatic global batch (rows per optimizer step over all processes)."""
BASE_LEARNING_RATE = 3e-3
"""AdamW learning rate at the smallest automatic batch (the breast-cancer reference's)."""
TARGET_STEPS = 2000
"""Optimizer steps the automatic epoch count aims for."""
MIN_EPOCHS, MAX_EPOCHS = 3, 60
PATIENCE = 5
"""Automatic early-stopping patience, where the validation split is large enough to trust."""
MIN_VAL_MINORITY = 100
"""Rows of the rarer class the validation split needs before early stopping is on by default."""


@dataclass(frozen=True)
class TrainingPlan:
    """The concrete settings one run trains with (what ``auto`` resolved to, and what was set)."""

    batch_size: int
    """Rows per step per process."""
    global_batch: int
    """Rows per optimizer step over all processes."""
    epochs: int
    learning_rate: float
    early_stopping_patience: int
    auto: tuple[str, ...]
    """The training.* keys that were ``auto``."""
    val_minority: int
    """Validation rows of the rarer class (what the early-stopping rule looks at)."""

    def apply(self, cfg: KfkitConfig) -> KfkitConfig:
        """``cfg`` with these settings in ``training``: what the trainers, the spec and checkpoints see."""
        training = dataclasses.replace(
            cfg.training,
            batch_size=self.batch_size,
            epochs=self.epochs,
            learning_rate=self.learning_rate,
            early_stopping_patience=self.early_stopping_patience,
        )
        return dataclasses.replace(cfg, training=training)

    def settings(self) -> dict[str, Any]:
        """The resolved settings for training.json, with the keys that were ``auto``."""
        fields = ("batch_size", "global_batch", "epochs", "learning_rate", "early_stopping_patience")
        return {**{name: getattr(self, name) for name in fields}, "auto": list(self.auto)}

    def describe(self, rows: int, world_size: int) -> str:
        """One line for the log: what the ``auto`` settings resolved to ("" when none was auto)."""
        if not self.auto:
            return ""
        per_process = f" ({self.batch_size} per process)" if world_size > 1 else ""
        if self.early_stopping_patience:
            stopping = f"early stopping after {self.early_stopping_patience} epochs without a better val_pr_auc"
        elif "early_stopping_patience" in self.auto:
            stopping = (
                f"no early stopping ({self.val_minority} validation rows of the rarer class, "
                f"under {MIN_VAL_MINORITY})"
            )
        else:
            stopping = "no early stopping"
        which = "" if len(self.auto) == 4 else f" ({', '.join(self.auto)})"
        return (
            f"[train] auto settings{which} for {rows:,} training rows: global batch "
            f"{self.global_batch}{per_process}, lr {self.learning_rate:.2g}, at most {self.epochs} epochs, {stopping}"
        )


def auto_global_batch(rows: int) -> int:
    """The power of two nearest ``rows / 128`` (about 128 steps an epoch), clamped to [128, 4096]."""
    target = max(rows, 1) / STEPS_PER_EPOCH
    return int(min(MAX_BATCH, max(MIN_BATCH, 2 ** round(math.log2(target)))))


def auto_learning_rate(global_batch: int) -> float:
    """``3e-3 * sqrt(global_batch / 128)``: square-root scaling of Adam's step with the batch."""
    return BASE_LEARNING_RATE * math.sqrt(global_batch / MIN_BATCH)


def auto_epochs(rows: int, global_batch: int) -> int:
    """Epochs for about 2,000 optimizer steps, within [3, 60]."""
    steps_per_epoch = math.ceil(max(rows, 1) / global_batch)
    return int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps_per_epoch))))


def auto_patience(val_positives: int, val_rows: int) -> int:
    """5 when the validation split has at least 100 rows of its rarer class, else 0 (off)."""
    return PATIENCE if min(val_positives, val_rows - val_positives) >= MIN_VAL_MINORITY else 0


def plan_training(
    tc: TrainingConfig, *, train_rows: int, val_rows: int, val_positives: int, world_size: int
) -> TrainingPlan:
    """Resolve ``tc``'s ``auto`` batch size, epochs, learning rate and patience for these splits.

    An explicit ``batch_size`` is per process (the global batch is ``batch_size * world_size``); an
    automatic one is the global batch split over the processes, so ``auto`` trains alike on 1 or N.
    """
    auto = tuple(
        key for key in ("batch_size", "epochs", "learning_rate", "early_stopping_patience") if getattr(tc, key) == AUTO
    )
    if tc.batch_size == AUTO:
        global_batch = auto_global_batch(train_rows)
        batch_size = math.ceil(global_batch / world_size)
    else:
        batch_size = int(tc.batch_size)
        global_batch = batch_size * world_size
    epochs = auto_epochs(train_rows, global_batch) if tc.epochs == AUTO else int(tc.epochs)
    learning_rate = auto_learning_rate(global_batch) if tc.learning_rate == AUTO else float(tc.learning_rate)
    val_minority = min(val_positives, val_rows - val_positives)
    patience = (
        auto_patience(val_positives, val_rows)
        if tc.early_stopping_patience == AUTO
        else int(tc.early_stopping_patience)
    )
    return TrainingPlan(batch_size, batch_size * world_size, epochs, learning_rate, patience, auto, val_minority)


def resolve_nproc(tc: TrainingConfig, *, cuda_devices: int | None = None) -> int:
    """``training.nproc``: as set, or for ``auto`` one process per visible GPU when training on CUDA, else 1.

    Args:
        tc: The training settings (``nproc`` and ``device``).
        cuda_devices: GPUs visible here; None asks torch (imported only when ``auto`` could mean CUDA).
    """
    if tc.nproc != AUTO:
        return int(tc.nproc)
    if tc.device == "cpu":
        return 1
    if cuda_devices is None:
        import torch  # device auto or cuda: only torch knows what CUDA sees (CUDA_VISIBLE_DEVICES included)

        cuda_devices = torch.cuda.device_count()
    return max(1, cuda_devices)


def pod_nproc(tc: TrainingConfig) -> int:
    """Processes per pod of a PyTorchJob/TrainJob: ``training.nproc``, or for ``auto`` one per requested GPU.

    ``training.cluster.gpus_per_node`` GPUs, or 1 process in a CPU pod.
    """
    return int(tc.nproc) if tc.nproc != AUTO else max(1, tc.cluster.gpus_per_node)


def resolve_threads(tc: TrainingConfig, *, nproc: int, cuda: bool, env: Mapping[str, str] | None = None) -> int:
    """Intra-op threads per process: ``training.threads``, else ``$OMP_NUM_THREADS``, else the rule.

    The rule: 1 per process on the CPU; on CUDA (where the CPU only launches kernels) the cores this
    process may use (taskset/cpuset aware) shared among the processes.
    """
    if tc.threads != AUTO:
        return int(tc.threads)
    env = os.environ if env is None else env
    if env.get("OMP_NUM_THREADS", "").isdigit() and int(env["OMP_NUM_THREADS"]) > 0:
        return int(env["OMP_NUM_THREADS"])
    if not cuda:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // nproc)
