"""The prepared-data layout both prep engines write and every later step reads.

``train.parquet``, ``val.parquet``, ``test.parquet``, ``schema.json`` (:class:`PreparedData`), ``stats.json``
and ``reference.parquet``; the feature columns of a frame; the one metadata writer and reader. A module of its
own so the engines (:mod:`kfkit.data.prep`, :mod:`kfkit.data.spark_prep`, :mod:`kfkit.data.spark_job`) and
the Feast offline source share it without importing each other.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd

    from kfkit.config import DatasetConfig

__all__ = [
    "PreparedData",
    "SPLITS",
    "REFERENCE_FILE",
    "feature_columns",
    "check_splits",
    "write_metadata",
    "load_prepared",
]

SPLITS = ("train", "val", "test")
REFERENCE_FILE = "reference.parquet"


@dataclass
class PreparedData:
    """What prep wrote, and the facts later steps need."""

    out_dir: str
    feature_names: list[str]
    label: str
    rows: dict[str, int]
    positives: dict[str, int]
    engine: str = "pandas"

    def split_path(self, split: str) -> Path:
        """Parquet file of one split."""
        return Path(self.out_dir) / f"{split}.parquet"


def feature_columns(frame: pd.DataFrame, cfg: DatasetConfig) -> list[str]:
    """The configured features, or every numeric column except label, entity and timestamp."""
    import pandas as pd

    if cfg.features:
        return list(cfg.features)
    excluded = {cfg.label, cfg.entity_column, cfg.timestamp_column}
    return [c for c in frame.columns if c not in excluded and pd.api.types.is_numeric_dtype(frame[c])]


def check_splits(rows: dict[str, int], total: int, cfg: DatasetConfig) -> None:
    """Every split must get rows.

    Raises:
        DatasetError: one would be empty (too few rows for the fractions).
    """
    for split, count in rows.items():
        if not count:
            raise DatasetError(
                f"cannot split {total} rows stratified by {cfg.label!r}: the {split} split would be empty; "
                f"add rows or raise dataset.val_fraction / dataset.test_fraction"
            )


def write_metadata(out: Path, prepared: PreparedData, stats: dict[str, dict[str, Any]]) -> None:
    """Write ``schema.json`` and ``stats.json`` (both engines: one format, full float precision, NaN as null)."""

    def number(value: Any) -> float | None:
        value = float(value)
        return None if math.isnan(value) else value

    (out / "schema.json").write_text(json.dumps(asdict(prepared), indent=2) + "\n")
    clean = {name: {k: number(v) for k, v in values.items()} for name, values in stats.items()}
    (out / "stats.json").write_text(json.dumps(clean, indent=2) + "\n")


def load_prepared(out_dir: str | Path) -> PreparedData:
    """Read back what :func:`prepare` wrote to ``out_dir``."""
    data = json.loads((Path(out_dir) / "schema.json").read_text())
    data["out_dir"] = str(out_dir)
    return PreparedData(**data)
