"""The schema-check messages both prep engines raise: one wording, so pandas and Spark fail alike.

Each engine finds the facts its own way (a pandas frame, Spark aggregates); this module turns the
facts into the :class:`~kfkit.errors.DatasetError` a user sees. Row numbers are 0-based positions in
the input as loaded (file order; a directory of Parquet shards in file-name order).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from kfkit.errors import DatasetError

__all__ = [
    "BadCells",
    "ROW_LIMIT",
    "missing_columns",
    "no_features",
    "non_numeric",
    "bad_values",
    "bad_labels",
    "too_few_per_class",
    "labels_ok",
]

ROW_LIMIT = 5
"""Rows named per column in a NaN/inf message."""

BadCells = tuple[str, str, int, Sequence[int]]
"""One column's bad cells: (column, "missing" | "infinite", how many, the first row numbers, sorted)."""


def missing_columns(missing: list[str], columns: list[str]) -> DatasetError:
    """Configured feature or label columns that the data lacks."""
    return DatasetError(
        f"columns {missing} not found; the data has {list(columns)[:40]}; "
        "set dataset.label / dataset.features to existing columns"
    )


def no_features() -> DatasetError:
    """No numeric column is left to be a feature."""
    return DatasetError("no numeric feature columns found; list them in dataset.features=[a,b,c]")


def non_numeric(columns: list[str]) -> DatasetError:
    """Feature columns whose type is not numeric."""
    return DatasetError(f"feature columns {columns} are not numeric; encode them or drop them from dataset.features")


def bad_values(rows: int, cells: Iterable[BadCells]) -> DatasetError:
    """``rows`` rows hold NaN, null or infinite values; ``cells`` says where (in column order)."""
    parts = []
    for column, kind, count, first in cells:
        if count:
            more = " ..." if count > ROW_LIMIT else ""
            parts.append(f"column {column!r} has {count} {kind} value(s) (rows {list(first)[:ROW_LIMIT]}{more})")
    return DatasetError(
        f"{rows} rows have missing or infinite values: {'; '.join(parts)}; "
        "set dataset.drop_na=true to drop those rows, or clean the input"
    )


def labels_ok(values: Iterable[Any]) -> bool:
    """Whether every label value is 0 or 1 (ints, floats or booleans, as pandas compares them)."""
    return set(values) <= {0, 1}


def bad_labels(label: str, values: Iterable[Any]) -> DatasetError:
    """The label column holds values other than 0 and 1."""
    return DatasetError(f"label column {label!r} must be 0/1; found values {sorted(map(str, set(values)))[:10]}")


def too_few_per_class(label: str, counts: dict[int, int]) -> DatasetError:
    """A class has fewer than 2 rows; ``counts`` in pandas ``value_counts`` order (most rows first)."""
    return DatasetError(f"label column {label!r} needs at least 2 rows of each class to split; has {counts}")
