"""Spark's part files of one split, streamed in row order into the one Parquet file later steps read.

On the way it counts rows and positives and, for the training split, computes the feature statistics
(float64, Chan's parallel update) and keeps the drift reference sample (the rows of smallest reference
hash): one batch and the sample in memory, whatever the split's size. Pure pyarrow and numpy, so the
Spark driver runs it after the executors wrote the parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kfkit.errors import DatasetError

__all__ = ["merge_parts", "ROW", "REF"]

ROW = "_kfkit_row"
"""The row number column Spark writes into the parts (dropped from the merged file)."""
REF = "_kfkit_ref"
"""The reference-sample hash column of the parts (dropped from the merged file)."""


def merge_parts(
    files: list[Path],
    target: Path,
    columns: list[str],
    label: str,
    shard_rows: int,
    *,
    features: list[str] | None = None,
    reference_rows: int = 0,
) -> dict[str, Any]:
    """Stream Spark's part files (each sorted by row) in order into one Parquet file of ``shard_rows`` row groups.

    With ``features`` (the training split) it also computes their statistics and keeps the
    ``reference_rows`` rows of smallest (reference hash, row): the drift reference sample.

    Returns:
        ``rows`` written, ``positives``, and for the training split ``stats`` and the ``sample`` frame.

    Raises:
        DatasetError: the parts are not in row order (a Spark layout this code does not expect).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    writer, pending, held, rows, positives, last_row = None, [], 0, 0, 0, -1
    moments = _Moments(len(features)) if features else None
    best: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (ref hash, row, features) of the sample
    try:
        for file in files:
            for batch in pq.ParquetFile(file).iter_batches(batch_size=65_536, columns=[*columns, ROW, REF]):
                row_ids = batch.column(ROW).to_numpy()
                if len(row_ids) and (row_ids[0] <= last_row or np.any(np.diff(row_ids) <= 0)):
                    raise DatasetError(f"Spark's parts under {file.parent.parent} are not in row order; rerun prep")
                last_row = int(row_ids[-1]) if len(row_ids) else last_row
                if moments is not None:
                    x = np.column_stack([batch.column(c).to_numpy() for c in features]).astype(np.float64)
                    moments.add(x)
                    refs = batch.column(REF).to_numpy()
                    best = _smallest(best, (refs, row_ids, x.astype(np.float32)), reference_rows)
                table = pa.Table.from_batches([batch]).select(columns)
                pending.extend(table.to_batches())
                held += table.num_rows
                while held >= shard_rows:
                    joined = pa.Table.from_batches(pending)
                    writer = writer or pq.ParquetWriter(target, joined.schema)
                    writer.write_table(joined.slice(0, shard_rows), row_group_size=shard_rows)
                    rest = joined.slice(shard_rows)
                    pending, held = rest.to_batches(), rest.num_rows
                rows += batch.num_rows
                positives += int(pc.sum(batch.column(label)).as_py() or 0)
        if pending:
            joined = pa.Table.from_batches(pending)
            writer = writer or pq.ParquetWriter(target, joined.schema)
            writer.write_table(joined, row_group_size=shard_rows)
    finally:
        if writer is not None:
            writer.close()
    result: dict[str, Any] = {"rows": rows, "positives": positives}
    if moments is not None:
        import pandas as pd

        result["stats"] = moments.stats(features)
        order = np.argsort(best[1]) if best is not None else []
        sample = best[2][order] if best is not None else np.zeros((0, len(features)), np.float32)
        result["sample"] = pd.DataFrame(sample, columns=features)
    return result


def _smallest(best: Any, batch: tuple[Any, Any, Any], k: int) -> Any:
    """The ``k`` rows of smallest (reference hash, row) among the kept ones and ``batch``'s."""
    import numpy as np

    if k <= 0:
        return best
    refs, rows, x = batch if best is None else (np.concatenate([best[i], batch[i]]) for i in range(3))
    keep = np.lexsort((rows, refs))[:k]
    return refs[keep], rows[keep], x[keep]


class _Moments:
    """mean, sample std, min and max per column over row batches, in float64 (Chan's parallel update)."""

    def __init__(self, width: int) -> None:
        import numpy as np

        self.count, self.mean, self.m2 = 0, np.zeros(width), np.zeros(width)
        self.low, self.high = np.full(width, np.inf), np.full(width, -np.inf)

    def add(self, x: Any) -> None:
        import numpy as np

        n = len(x)
        if not n:
            return
        mean = x.mean(axis=0)
        m2 = ((x - mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.low, self.high = np.minimum(self.low, x.min(axis=0)), np.maximum(self.high, x.max(axis=0))

    def stats(self, features: list[str]) -> dict[str, dict[str, float]]:
        import math

        std = [math.sqrt(v / (self.count - 1)) if self.count > 1 else math.nan for v in self.m2]
        return {name: {"mean": float(self.mean[i]), "std": std[i], "min": float(self.low[i]),
                       "max": float(self.high[i])} for i, name in enumerate(features)}  # fmt: skip
