"""The deterministic split: a row's train/val/test follows a 64-bit hash of its key, stratified by label.

Both prep engines compute the same hash: Spark's own SQL ``xxhash64`` (there) and a numpy copy of it
(here, bit for bit; a test checks it against Spark). The key is the row's 0-based position in the input,
or ``data.split_key`` (an integer column such as an entity id). Per label, rows are ordered by
``(hash, row)`` and cut at exact counts: the first ``n_train`` go to train, the next ``n_val`` to val, the
rest to test. So the split depends only on the keys, labels and seed — never on an engine's random
draws or partitioning — and both engines put every row in the same split.

Spark cannot sort 50M rows per label on one core, so it finds the same cut points in two bounded
passes: row counts per (label, top 16 bits of the hash) bucket, then only the rows of the bucket that
holds each cut (:func:`locate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "SPLIT_CODES",
    "BUCKET_SHIFT",
    "xxhash64",
    "split_hash",
    "reference_hash",
    "split_sizes",
    "assign_splits",
    "locate",
]

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
BUCKET_SHIFT = 48
"""A hash's bucket is ``hash >> 48`` (arithmetic): 65,536 buckets, ordered as the signed hashes are."""

_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5
_SPARK_SEED = 42  # the seed Spark's xxhash64(...) SQL function starts from


def xxhash64(values: np.ndarray, seed: int | np.ndarray = _SPARK_SEED) -> np.ndarray:
    """XXH64 of each 64-bit integer, as Spark's ``XXH64.hashLong(value, seed)`` (signed int64 out).

    ``seed`` may be an array (one per value): Spark's ``xxhash64(a, b)`` hashes ``b`` seeded by the
    hash of ``a``.
    """
    import numpy as np

    def rotl(x: np.ndarray, r: int) -> np.ndarray:
        return (x << np.uint64(r)) | (x >> np.uint64(64 - r))

    p1, p2, p3, p4, p5 = (np.uint64(p) for p in (_P1, _P2, _P3, _P4, _P5))
    with np.errstate(over="ignore"):  # XXH64 is arithmetic modulo 2**64: wrapping is the point
        k = np.ascontiguousarray(values, dtype=np.int64).view(np.uint64)
        h = np.asarray(seed, dtype=np.int64).view(np.uint64) + p5 + np.uint64(8)
        h = h ^ (rotl(k * p2, 31) * p1)
        h = rotl(h, 27) * p1 + p4
        h = h ^ (h >> np.uint64(33))
        h = h * p2
        h = h ^ (h >> np.uint64(29))
        h = h * p3
        h = h ^ (h >> np.uint64(32))
    return h.view(np.int64)


def split_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """The split hash of each key: Spark's ``xxhash64(key, CAST(seed AS BIGINT))``."""
    import numpy as np

    keys = np.asarray(keys, dtype=np.int64)
    return xxhash64(np.full(len(keys), seed, dtype=np.int64), seed=xxhash64(keys))


def reference_hash(hashes: np.ndarray) -> np.ndarray:
    """The order the drift reference sample is drawn in: Spark's ``xxhash64(key, seed, 1L)``.

    Independent of where the split cut falls, so the sample is a uniform draw of the training rows.
    """
    import numpy as np

    return xxhash64(np.ones(len(hashes), dtype=np.int64), seed=hashes)


def split_sizes(rows: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Rows of one label that go to (train, val, test): val and test rounded, train takes the rest."""
    test = round(rows * test_fraction)
    val = round(rows * val_fraction)
    return rows - val - test, val, test


def assign_splits(
    labels: np.ndarray, hashes: np.ndarray, rows: np.ndarray, *, val_fraction: float, test_fraction: float
) -> np.ndarray:
    """Each row's split code (:data:`SPLIT_CODES`): per label, ordered by ``(hash, row)``, cut at exact counts."""
    import numpy as np

    codes = np.empty(len(labels), dtype=np.int8)
    order = np.lexsort((rows, hashes, labels))  # by label, then hash, then row (the tie-break for shared keys)
    sorted_labels = labels[order]
    for label in np.unique(sorted_labels):
        group = order[sorted_labels == label]
        n_train, n_val, _ = split_sizes(len(group), val_fraction, test_fraction)
        codes[group[:n_train]] = SPLIT_CODES["train"]
        codes[group[n_train : n_train + n_val]] = SPLIT_CODES["val"]
        codes[group[n_train + n_val :]] = SPLIT_CODES["test"]
    return codes


def locate(bucket_counts: Mapping[int, int], rank: int) -> tuple[int, int] | None:
    """The bucket holding the row of 0-based ``rank`` in (hash, row) order, and its rank inside that bucket.

    Args:
        bucket_counts: Rows per bucket of one label.
        rank: Position of the wanted row among that label's rows.

    Returns:
        ``(bucket, rank in bucket)``, or None when ``rank`` is past the last row (no cut needed).
    """
    seen = 0
    for bucket in sorted(bucket_counts):
        count = bucket_counts[bucket]
        if rank < seen + count:
            return bucket, rank - seen
        seen += count
    return None
