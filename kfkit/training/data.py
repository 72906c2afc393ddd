"""Trainer input: the prepared splits read once (arrays for Keras, tensors for the DDP worker), and each rank's rows."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = ["read_split", "load_split", "positive_weight", "epoch_indices", "shard_size"]


def read_split(path: str | Path, features: list[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as ``(x float32 [rows, features], y float32 [rows])`` arrays: how both trainers read one."""
    import pandas as pd

    frame = pd.read_parquet(path, columns=[*features, label])
    return frame[features].to_numpy(dtype="float32"), frame[label].to_numpy(dtype="float32")


def load_split(path: str | Path, features: list[str], label: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`read_split` as tensors on ``device``, read once.

    Batches are then slices of these tensors, never per-row Python. On CUDA the host copy is pinned
    so the one transfer to the GPU is a fast asynchronous DMA.
    """
    import torch

    x_array, y_array = read_split(path, features, label)
    x, y = torch.from_numpy(x_array), torch.from_numpy(y_array)
    if not str(device).startswith("cuda"):
        return x, y  # the CPU path never touches CUDA APIs (pin_memory would initialise CUDA)
    return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)


def positive_weight(y: Any, configured: float | None) -> float:
    """``training.pos_weight``, or negatives / positives of the training labels ``y`` (array or tensor), at least 1."""
    positives = float(y.sum())
    return configured or max(1.0, (len(y) - positives) / max(positives, 1.0))


def shard_size(rows: int, world_size: int) -> int:
    """Rows each rank sees per epoch: the split padded up to a multiple of ``world_size``."""
    return math.ceil(rows / world_size)


def epoch_indices(rows: int, *, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's row indices for ``epoch``, in training order (int64, CPU).

    The same as ``DistributedSampler(shuffle=True, drop_last=False)`` after ``set_epoch(epoch)``: one
    permutation seeded by ``seed + epoch`` (identical on every rank), padded with its own head to a
    multiple of ``world_size``, every ``world_size``-th row from ``rank`` on. So every rank runs the
    same number of steps (DDP's all-reduce never waits on a rank that ran out), the order depends
    only on (seed, epoch) — which is what lets a resumed run replay an epoch exactly — and it is
    built with tensor ops instead of a Python list of a million ints.
    """
    import torch

    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(rows, generator=generator)
    total = shard_size(rows, world_size) * world_size
    if total > rows:
        order = torch.cat([order, order.repeat(math.ceil((total - rows) / rows))[: total - rows]])
    return order[rank:total:world_size]
