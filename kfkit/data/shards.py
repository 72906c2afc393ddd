"""Synthetic fraud transactions at any size, written straight to Parquet shards (one shard in memory at a time).

The same columns and class signal as :func:`kfkit.data.sources.synthetic_fraud`, but generated shard by
shard from ``(seed, shard index)``, so 50M rows never sit in memory and a shard's rows do not depend on
how many shards follow. Timestamps rise across the shards; card ids are drawn over all of them.
Point ``dataset=csv dataset.path=<folder>`` at the result.
"""

from __future__ import annotations

from pathlib import Path

from kfkit.data.sources import _DRIFT_FEATURES, _SIGNAL_FEATURES, N_FRAUD_FEATURES

__all__ = ["write_synthetic_shards", "shard_name"]

_SPAN_S = 90 * 86400  # the 90 days synthetic_fraud spreads its timestamps over


def shard_name(index: int) -> str:
    """File name of shard ``index``: zero-padded, so file-name order is row order."""
    return f"part-{index:05d}.parquet"


def write_synthetic_shards(
    out_dir: str | Path,
    *,
    n_rows: int,
    shard_rows: int = 1_000_000,
    positive_rate: float = 0.02,
    drift: float = 0.0,
    seed: int = 42,
    label: str = "is_fraud",
    entity_column: str = "card_id",
    timestamp_column: str = "event_timestamp",
) -> list[Path]:
    """Write ``n_rows`` seeded transactions to ``out_dir/part-NNNNN.parquet``, ``shard_rows`` rows per file.

    Returns:
        The shard files, in row order.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # One class signal for every shard: drawn once, from the seed alone.
    shift = np.zeros(N_FRAUD_FEATURES - 2, dtype=np.float32)
    shift[list(_SIGNAL_FEATURES)] = rng.uniform(0.6, 1.4, len(_SIGNAL_FEATURES)) * rng.choice(
        [-1, 1], len(_SIGNAL_FEATURES)
    )
    n_cards = max(1, n_rows // 20)
    shards = max(1, -(-n_rows // shard_rows))
    start_us = int(np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64))
    files = []
    for index in range(shards):
        rows = min(shard_rows, n_rows - index * shard_rows)
        part = np.random.default_rng([seed, index])
        y = (part.random(rows) < positive_rate).astype(np.int64)
        latent = part.standard_normal((rows, N_FRAUD_FEATURES - 2), dtype=np.float32)
        latent += y[:, None] * shift
        amount = np.exp(part.normal(3.5 + 0.8 * y, 1.0)).astype(np.float32)
        night = part.random(rows) < np.where(y == 1, 0.6, 0.2)
        hour = np.where(night, part.integers(0, 6, rows), part.integers(6, 24, rows)).astype(np.float32)
        if drift:
            latent[:, list(_DRIFT_FEATURES)] += np.float32(drift)
            amount *= np.float32(1.0 + drift)
        # Each shard owns one slice of the 90 days, so timestamps rise across shards as in one frame.
        low, high = _SPAN_S * index // shards, _SPAN_S * (index + 1) // shards
        seconds = np.sort(part.integers(low, max(high, low + 1), rows))
        columns = {f"v{i:02d}": latent[:, i - 1] for i in range(1, N_FRAUD_FEATURES - 1)}
        columns |= {"amount": amount, "hour": hour, label: y}
        columns[entity_column] = part.integers(0, n_cards, rows).astype(np.int64)
        columns[timestamp_column] = pa.array(start_us + seconds * 1_000_000, type=pa.timestamp("us", tz="UTC"))
        path = out / shard_name(index)
        pq.write_table(pa.table(columns), path, row_group_size=shard_rows)
        files.append(path)
        del latent, columns
    return files
