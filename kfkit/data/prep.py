"""Prepare a dataset for training: pick features, check the schema, split, write Parquet and stats."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import DatasetError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kfkit.config import DatasetConfig

__all__ = ["PreparedData", "prepare", "load_prepared", "feature_columns", "validate_frame", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass
class PreparedData:
    """What prep wrote, and the facts later steps need."""

    out_dir: str
    feature_names: list[str]
    label: str
    rows: dict[str, int]
    positives: dict[str, int]

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


def validate_frame(frame: pd.DataFrame, cfg: DatasetConfig, features: list[str]) -> pd.DataFrame:
    """Check the schema and return the frame, NaN rows dropped if ``cfg.drop_na``.

    Raises:
        DatasetError: naming the column, the bad values (first rows) and the fix.
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in [*features, cfg.label] if c not in frame.columns]
    if missing:
        raise DatasetError(
            f"columns {missing} not found; the data has {list(frame.columns)[:40]}; "
            "set dataset.label / dataset.features to existing columns"
        )
    if not features:
        raise DatasetError("no numeric feature columns found; list them in dataset.features=[a,b,c]")
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DatasetError(
            f"feature columns {non_numeric} are not numeric; encode them or drop them from dataset.features"
        )
    subset = frame[[*features, cfg.label]]
    missing_values = subset.isna().to_numpy()
    infinite = np.zeros_like(missing_values)
    infinite[:, : len(features)] = np.isinf(subset[features].to_numpy(dtype=np.float64))
    na_rows = pd.Series((missing_values | infinite).any(axis=1), index=frame.index)
    if na_rows.any():
        if not cfg.drop_na:
            raise DatasetError(
                f"{int(na_rows.sum())} rows have missing or infinite values: "
                f"{_bad_cells(list(subset.columns), missing_values, infinite)}; "
                "set dataset.drop_na=true to drop those rows, or clean the input"
            )
        frame = frame.loc[~na_rows]
    labels = set(pd.unique(frame[cfg.label]))
    if not labels <= {0, 1}:
        raise DatasetError(f"label column {cfg.label!r} must be 0/1; found values {sorted(map(str, labels))[:10]}")
    counts = frame[cfg.label].astype("int64").value_counts()
    if counts.get(1, 0) < 2 or counts.get(0, 0) < 2:
        raise DatasetError(
            f"label column {cfg.label!r} needs at least 2 rows of each class to split; has {counts.to_dict()}"
        )
    return frame


def prepare(cfg: DatasetConfig, out_dir: str | Path, frame: pd.DataFrame | None = None) -> PreparedData:
    """Load (unless ``frame`` is given), validate, split stratified, and write train/val/test Parquet.

    Also writes ``schema.json`` (features, label, row counts) and ``stats.json`` (per-feature
    mean/std/min/max of the training split) next to the splits.
    """
    import numpy as np
    from sklearn.model_selection import train_test_split

    from kfkit.data.sources import load

    if frame is None:
        frame = load(cfg)
    features = feature_columns(frame, cfg)
    frame = validate_frame(frame, cfg, features)
    keep = [c for c in [*features, cfg.label, cfg.entity_column, cfg.timestamp_column] if c and c in frame.columns]
    frame = frame[keep].reset_index(drop=True)
    frame[features] = frame[features].astype(np.float32)
    frame[cfg.label] = frame[cfg.label].astype("int64")
    holdout = cfg.val_fraction + cfg.test_fraction
    try:
        train, rest = train_test_split(frame, test_size=holdout, stratify=frame[cfg.label], random_state=cfg.seed)
        val, test = train_test_split(
            rest, test_size=cfg.test_fraction / holdout, stratify=rest[cfg.label], random_state=cfg.seed
        )
    except ValueError as e:
        raise DatasetError(f"cannot split {len(frame)} rows stratified by {cfg.label!r}: {e}") from e
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = {"train": train, "val": val, "test": test}
    for split, part in parts.items():
        part.reset_index(drop=True).to_parquet(out / f"{split}.parquet", index=False)
    prepared = PreparedData(
        out_dir=str(out),
        feature_names=features,
        label=cfg.label,
        rows={k: int(len(v)) for k, v in parts.items()},
        positives={k: int(v[cfg.label].sum()) for k, v in parts.items()},
    )
    (out / "schema.json").write_text(json.dumps(asdict(prepared), indent=2) + "\n")
    described = train[features].describe().T[["mean", "std", "min", "max"]]
    (out / "stats.json").write_text(described.to_json(orient="index", indent=2) + "\n")
    return prepared


def load_prepared(out_dir: str | Path) -> PreparedData:
    """Read back what :func:`prepare` wrote to ``out_dir``."""
    data = json.loads((Path(out_dir) / "schema.json").read_text())
    data["out_dir"] = str(out_dir)
    return PreparedData(**data)


def _bad_cells(columns: list[str], missing: np.ndarray, infinite: np.ndarray, limit: int = 5) -> str:
    """Each column with NaN or inf values, what they are and in which rows (0-based, first ``limit``)."""
    import numpy as np

    parts = []
    for j, column in enumerate(columns):
        for kind, mask in (("missing", missing[:, j]), ("infinite", infinite[:, j])):
            if rows := np.flatnonzero(mask).tolist():
                more = " ..." if len(rows) > limit else ""
                parts.append(f"column {column!r} has {len(rows)} {kind} value(s) (rows {rows[:limit]}{more})")
    return "; ".join(parts)
