"""Prepare a dataset for training: pick features, check the schema, split, write Parquet, stats and a reference.

One prep, two engines (``data.engine``): pandas here, on one frame; Spark in :mod:`kfkit.data.spark_prep`,
in bounded memory at any size (a local session, or a SparkApplication with ``data.spark.master=k8s``).
Both check the schema with the same messages (:mod:`kfkit.data.checks`), put every row in the same split
(:mod:`kfkit.data.split`) and write the same layout, which later steps read:

- ``train.parquet``, ``val.parquet``, ``test.parquet``: one file per split, rows in input order,
  features float32, label int64 (plus entity/timestamp columns), in row groups of ``data.shard_rows``
  (the shards ``training.data=stream`` reads);
- ``schema.json`` (:class:`PreparedData`), ``stats.json`` (mean/std/min/max per feature of the
  training split, in float64) and ``reference.parquet`` (a hash-drawn sample of training rows for the
  drift detector).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.data import checks
from kfkit.data.layout import (
    REFERENCE_FILE,
    SPLITS,
    PreparedData,
    check_splits,
    feature_columns,
    load_prepared,
    write_metadata,
)
from kfkit.errors import DatasetError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kfkit.config import DatasetConfig, KfkitConfig
    from kfkit.config.data import DataConfig

__all__ = [
    "PreparedData",
    "prepare",
    "prepare_run",
    "load_prepared",
    "feature_columns",
    "validate_frame",
    "write_metadata",
    "SPLITS",
    "REFERENCE_FILE",
]


def validate_frame(frame: pd.DataFrame, cfg: DatasetConfig, features: list[str]) -> pd.DataFrame:
    """Check the schema and return the frame, NaN rows dropped if ``cfg.drop_na``.

    Row numbers in messages are 0-based positions in ``frame``.

    Raises:
        DatasetError: naming the column, the bad values (first rows) and the fix.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in [*features, cfg.label] if c not in frame.columns]
    if missing:
        raise checks.missing_columns(missing, list(frame.columns))
    if not features:
        raise checks.no_features()
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise checks.non_numeric(non_numeric)
    subset = frame[[*features, cfg.label]]
    missing_values = subset.isna().to_numpy()
    infinite = np.zeros_like(missing_values)
    infinite[:, : len(features)] = np.isinf(subset[features].to_numpy(dtype=np.float64))
    na_rows = pd.Series((missing_values | infinite).any(axis=1), index=frame.index)
    if na_rows.any():
        if not cfg.drop_na:
            raise checks.bad_values(int(na_rows.sum()), _bad_cells(list(subset.columns), missing_values, infinite))
        frame = frame.loc[~na_rows]
    labels = pd.unique(frame[cfg.label])
    if not checks.labels_ok(labels):
        raise checks.bad_labels(cfg.label, labels)
    counts = frame[cfg.label].astype("int64").value_counts()
    if counts.get(1, 0) < 2 or counts.get(0, 0) < 2:
        raise checks.too_few_per_class(cfg.label, counts.to_dict())
    return frame


def prepare(
    cfg: DatasetConfig,
    out_dir: str | Path,
    frame: pd.DataFrame | None = None,
    *,
    data: DataConfig | None = None,
    reference_rows: int = 1000,
) -> PreparedData:
    """Load (unless ``frame`` is given), validate, split stratified by hash, and write the prepared layout.

    Args:
        cfg: The dataset section.
        out_dir: Folder to write (created).
        frame: Rows already in memory (e.g. from a Feast offline store); always prepared with pandas.
        data: The data section (engine, split key, shard rows, Spark session); None: pandas defaults.
        reference_rows: Training rows in ``reference.parquet`` (``drift.reference_rows``).

    Raises:
        DatasetError: the input is missing, unreadable, or fails a schema check.
        ConfigError: ``data.spark.master=k8s`` (that needs the whole config: use :func:`prepare_run`).
    """
    from kfkit.config.data import DataConfig

    data = data or DataConfig()
    if frame is None and data.engine == "spark":
        from kfkit.data.spark_prep import prepare_spark

        return prepare_spark(cfg, out_dir, data=data, reference_rows=reference_rows)
    return _prepare_pandas(cfg, out_dir, frame, data=data, reference_rows=reference_rows)


def prepare_run(cfg: KfkitConfig, out_dir: str | Path) -> PreparedData:
    """Prep as a run's config says: pandas, local Spark, or a SparkApplication on the cluster.

    The entry point of the prep step: it reads ``data.*``, ``features.enabled`` and ``drift.reference_rows``
    besides ``dataset.*``. With ``features.enabled`` the rows come from the Feast repository by point-in-time
    retrieval (:func:`kfkit.features.training.training_frame`), so training and serving read one repository.
    """
    frame = None
    if cfg.features.enabled:
        from kfkit.features.training import training_frame

        frame = training_frame(cfg)
    elif cfg.data.engine == "spark" and cfg.data.spark.master == "k8s":
        from kfkit.data.spark_job import prepare_on_cluster

        return prepare_on_cluster(cfg, out_dir)
    return prepare(cfg.dataset, out_dir, frame=frame, data=cfg.data, reference_rows=cfg.drift.reference_rows)


def _prepare_pandas(
    cfg: DatasetConfig, out_dir: str | Path, frame: pd.DataFrame | None, *, data: DataConfig, reference_rows: int
) -> PreparedData:
    import numpy as np

    from kfkit.data.sources import load
    from kfkit.data.split import SPLIT_CODES, assign_splits, reference_hash, split_hash

    if frame is None:
        frame = load(cfg)
    frame = frame.reset_index(drop=True)  # positions are the row numbers messages and the split key use
    features = feature_columns(frame, cfg)
    frame = validate_frame(frame, cfg, features)
    positions = frame.index.to_numpy(dtype=np.int64)
    keys = positions if data.split_key is None else _key_values(frame, data.split_key)
    keep = [c for c in [*features, cfg.label, cfg.entity_column, cfg.timestamp_column] if c and c in frame.columns]
    frame = frame[keep].reset_index(drop=True)
    frame[features] = frame[features].astype(np.float32)
    frame[cfg.label] = frame[cfg.label].astype("int64")
    hashes = split_hash(keys, cfg.seed)
    labels = frame[cfg.label].to_numpy()
    codes = assign_splits(labels, hashes, positions, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction)
    rows = {split: int((codes == code).sum()) for split, code in SPLIT_CODES.items()}
    check_splits(rows, len(frame), cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    positives = {}
    for split, code in SPLIT_CODES.items():
        part = frame.loc[codes == code].reset_index(drop=True)
        # Microsecond timestamps, as Spark writes them: both engines' files have one schema.
        part.to_parquet(out / f"{split}.parquet", index=False, row_group_size=data.shard_rows,
                        coerce_timestamps="us", allow_truncated_timestamps=True)  # fmt: skip
        positives[split] = int(part[cfg.label].sum())
    train_mask = codes == SPLIT_CODES["train"]
    train = frame.loc[train_mask, features].astype(np.float64)
    stats = {
        name: {"mean": train[name].mean(), "std": train[name].std(), "min": train[name].min(), "max": train[name].max()}
        for name in features
    }
    order = np.lexsort((positions[train_mask], reference_hash(hashes[train_mask])))[:reference_rows]
    reference = frame.loc[train_mask, features].iloc[np.sort(order)].reset_index(drop=True)
    reference.to_parquet(out / REFERENCE_FILE, index=False)
    prepared = PreparedData(str(out), features, cfg.label, rows, positives, engine="pandas")
    write_metadata(out, prepared, stats)
    return prepared


def _key_values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``data.split_key``'s values as int64.

    Raises:
        DatasetError: the column is missing or not integer.
    """
    import pandas as pd

    if column not in frame.columns:
        raise DatasetError(f"data.split_key={column!r} is not a column; the data has {list(frame.columns)[:40]}")
    if not pd.api.types.is_integer_dtype(frame[column]):
        raise DatasetError(
            f"data.split_key={column!r} has type {frame[column].dtype}, not an integer; name an integer id column"
        )
    return frame[column].to_numpy(dtype="int64")


def _bad_cells(columns: list[str], missing: np.ndarray, infinite: np.ndarray) -> list[checks.BadCells]:
    """Each column's NaN and inf cells: count and first rows (0-based), for :func:`checks.bad_values`."""
    import numpy as np

    cells: list[checks.BadCells] = []
    for j, column in enumerate(columns):
        for kind, mask in (("missing", missing[:, j]), ("infinite", infinite[:, j])):
            rows = np.flatnonzero(mask)
            if len(rows):
                cells.append((column, kind, len(rows), rows[: checks.ROW_LIMIT].tolist()))
    return cells
