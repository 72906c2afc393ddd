"""Trainer input: the splits read whole (Keras, DDP in memory) or streamed by row group, and each rank's rows.

The epoch order is one function of (row-group sizes, seed, epoch, rank, world size, buffer rows):
:func:`epoch_order`. ``training.data=memory`` gathers it from the whole split in memory;
``training.data=stream`` (:func:`stream_batches`) reads only the row groups it covers, one buffer at a
time, and yields exactly the same batches. So both give the same weights, and a resumed run replays an
epoch exactly in either mode.

- One row group holding the whole split within one buffer (every small data set): the order is
  ``DistributedSampler(shuffle=True)``'s (:func:`epoch_indices`).
- Otherwise the row groups are permuted per epoch, their rows laid end to end, and rank ``r`` takes the
  ``r``-th contiguous stretch of ``ceil(rows / world_size)`` rows (the last wraps to the start, as the
  sampler pads). A rank reads only the row groups its stretch covers, buffer by buffer; each buffer of
  ``data.shuffle_buffer_rows`` rows is shuffled before it is batched. Memory is one buffer plus one
  row group, whatever the split's size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "read_split",
    "load_split",
    "positive_weight",
    "epoch_indices",
    "shard_size",
    "row_group_sizes",
    "epoch_order",
    "stream_batches",
    "feature_moments",
    "streamed_moments",
]


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


def positive_weight(y: Any, configured: float | None, *, rows: int | None = None) -> float:
    """``training.pos_weight``, or negatives / positives of the training labels, at least 1.

    Args:
        y: The training labels (array or tensor), or their number of positives when ``rows`` is given
            (a streaming rank knows the counts from schema.json, not the labels).
        configured: ``training.pos_weight``.
        rows: Training rows, with ``y`` a count.
    """
    positives = float(y if rows is not None else y.sum())
    total = rows if rows is not None else len(y)
    return configured or max(1.0, (total - positives) / max(positives, 1.0))


def shard_size(rows: int, world_size: int) -> int:
    """Rows each rank sees per epoch: the split padded up to a multiple of ``world_size``."""
    return math.ceil(rows / world_size)


def epoch_indices(rows: int, *, seed: int, epoch: int, rank: int, world_size: int) -> torch.Tensor:
    """This rank's row indices for ``epoch``, in training order (int64, CPU), for one row group.

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


def row_group_sizes(path: str | Path) -> list[int]:
    """Rows of each row group of a Parquet file (from its footer; no data is read)."""
    import pyarrow.parquet as pq

    metadata = pq.ParquetFile(path).metadata
    return [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]


def _single(sizes: list[int], buffer_rows: int) -> bool:
    return len(sizes) == 1 and sizes[0] <= buffer_rows


def _generator(seed: int, epoch: int, rank: int, salt: int) -> torch.Generator:
    import torch

    # Distinct, reproducible streams per (epoch, rank, purpose); rank 0's buffers use seed + epoch.
    return torch.Generator().manual_seed((seed + epoch + 1_000_003 * rank + 7_919 * salt) % (2**63))


def _plan(sizes: list[int], *, seed: int, epoch: int, rank: int, world_size: int, buffer_rows: int):
    """This rank's buffers: for each, the (row group, first, end) pieces it covers and its shuffle."""
    import torch

    rows = sum(sizes)
    groups = torch.randperm(len(sizes), generator=_generator(seed, epoch, 0, 1)).tolist()
    starts = [0] * len(sizes)  # first row (in the file) of each row group
    for i in range(1, len(sizes)):
        starts[i] = starts[i - 1] + sizes[i - 1]
    per_rank = shard_size(rows, world_size)
    shuffles = _generator(seed, epoch, rank, 0)
    begin = rank * per_rank
    for first in range(0, per_rank, buffer_rows):
        length = min(buffer_rows, per_rank - first)
        pieces, position, need = [], (begin + first) % rows, length
        while need:
            # Walk the permuted row groups laid end to end, wrapping past the last (the padding).
            seen = 0
            for group in groups:
                if position < seen + sizes[group]:
                    offset = position - seen
                    take = min(sizes[group] - offset, need)
                    pieces.append((group, starts[group] + offset, take))
                    break
                seen += sizes[group]
            position, need = (position + take) % rows, need - take
        yield pieces, torch.randperm(length, generator=shuffles)


def epoch_order(
    sizes: list[int], *, seed: int, epoch: int, rank: int, world_size: int, buffer_rows: int
) -> torch.Tensor:
    """This rank's row indices (in the split's file) for ``epoch``, in training order (int64, CPU).

    What :func:`stream_batches` yields, as indices into the whole split (``training.data=memory``).
    """
    import torch

    rows = sum(sizes)
    if _single(sizes, buffer_rows):
        return epoch_indices(rows, seed=seed, epoch=epoch, rank=rank, world_size=world_size)
    parts = []
    for pieces, shuffle in _plan(sizes, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                                 buffer_rows=buffer_rows):  # fmt: skip
        ids = torch.cat([torch.arange(first, first + take) for _, first, take in pieces])
        parts.append(ids[shuffle])
    return torch.cat(parts)


def stream_batches(
    path: str | Path,
    features: list[str],
    label: str,
    *,
    seed: int,
    epoch: int,
    rank: int,
    world_size: int,
    buffer_rows: int,
    batch_size: int,
    start_step: int = 0,
    device: str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches for ``epoch``, read from the row groups of ``path`` one buffer at a time.

    The batches equal slices of the whole split gathered by :func:`epoch_order`. ``start_step`` skips
    the batches a resumed run already trained on: buffers wholly before it are not read at all.
    """
    import pyarrow.parquet as pq
    import torch

    sizes = row_group_sizes(path)
    source = pq.ParquetFile(path)
    columns = [*features, label]
    cached: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def group(index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if index not in cached:
            cached.clear()  # one row group held: a buffer boundary inside it must not read it twice
            cached[index] = _tensors(source.read_row_group(index, columns=columns), features, label)
        return cached[index]

    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    skip = start_step * batch_size
    if _single(sizes, buffer_rows):
        order = epoch_indices(sizes[0], seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        x, y = group(0)
        buffers: Iterator[Any] = iter([(x.index_select(0, order), y.index_select(0, order), 0)])
    else:
        buffers = _read_buffers(sizes, starts, group, skip, seed=seed, epoch=epoch, rank=rank,
                                world_size=world_size, buffer_rows=buffer_rows)  # fmt: skip
    carry_x, carry_y = None, None
    for x, y, before in buffers:
        if skip > before:  # the part of this buffer a resumed run trained on already
            x, y = x[skip - before :], y[skip - before :]
        if carry_x is not None:
            x, y = torch.cat([carry_x, x]), torch.cat([carry_y, y])
        whole = len(x) - len(x) % batch_size
        for begin in range(0, whole, batch_size):
            yield _to(x[begin : begin + batch_size], device), _to(y[begin : begin + batch_size], device)
        carry_x, carry_y = (x[whole:], y[whole:]) if whole < len(x) else (None, None)
    if carry_x is not None and len(carry_x):
        yield _to(carry_x, device), _to(carry_y, device)


def _read_buffers(sizes, starts, group, skip, **plan) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Each shuffled buffer of the plan with the rank-order position of its first row.

    Buffers wholly inside ``skip`` are not read; their shuffles are still drawn, so the later buffers
    shuffle as in an unbroken epoch.
    """
    import torch

    done = 0
    for pieces, shuffle in _plan(sizes, **plan):
        length = len(shuffle)
        if done + length <= skip:
            done += length
            continue
        xs, ys = [], []
        for index, first, take in pieces:
            x, y = group(index)
            offset = first - starts[index]
            xs.append(x[offset : offset + take])
            ys.append(y[offset : offset + take])
        x, y = torch.cat(xs), torch.cat(ys)
        yield x.index_select(0, shuffle), y.index_select(0, shuffle), done
        done += length


def _tensors(table: Any, features: list[str], label: str) -> tuple[torch.Tensor, torch.Tensor]:
    import numpy as np
    import torch

    x = np.column_stack([table.column(c).to_numpy().astype(np.float32, copy=False) for c in features])
    y = table.column(label).to_numpy().astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


def _to(tensor: torch.Tensor, device: str) -> torch.Tensor:
    return tensor if device == "cpu" else tensor.to(device, non_blocking=True)


def feature_moments(chunks: Iterator[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation per column over row chunks, in float64 (Chan's parallel update).

    Both data modes standardise with this, over the same chunks (the row groups), so the statistics
    — and so the weights — agree bit for bit whether the split was loaded or streamed.
    """
    import numpy as np

    count, mean, m2 = 0, None, None
    for chunk in chunks:
        values = np.ascontiguousarray(chunk, dtype=np.float64)  # one layout: numpy's sums follow memory order
        n = len(values)
        if not n:
            continue
        chunk_mean = values.mean(axis=0)
        chunk_m2 = ((values - chunk_mean) ** 2).sum(axis=0)
        if mean is None:
            count, mean, m2 = n, chunk_mean, chunk_m2
            continue
        delta = chunk_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + chunk_m2 + delta**2 * (count * n / total)
        count = total
    if mean is None:
        raise ValueError("no rows to standardise with")
    return mean, np.sqrt(m2 / max(count - 1, 1))


def streamed_moments(path: str | Path, features: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`feature_moments` over the row groups of ``path``, read one at a time."""
    import numpy as np
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)

    def chunks() -> Iterator[np.ndarray]:
        for i in range(source.metadata.num_row_groups):
            table = source.read_row_group(i, columns=features)
            yield np.column_stack([table.column(c).to_numpy().astype(np.float32, copy=False) for c in features])

    return feature_moments(chunks())
