"""The offline source prep writes: Parquet feature rows and label rows, then the repository generated and applied."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import DatasetError
from kfkit.features.spec import FeatureSpec

if TYPE_CHECKING:
    import pandas as pd

    from kfkit.config import KfkitConfig

__all__ = ["write_offline_source", "FEATURES_FILE", "LABELS_FILE"]

FEATURES_FILE = "features.parquet"
LABELS_FILE = "labels.parquet"


def write_offline_source(frame: pd.DataFrame, cfg: KfkitConfig, out_dir: str | Path) -> Path:
    """Split ``frame`` into the feature view's source and the label rows, and (re)apply the repository.

    Writes ``out_dir/features.parquet`` (entity, event timestamp, features: the FileSource) and
    ``out_dir/labels.parquet`` (entity, event timestamp, label: what training joins features onto), then
    generates ``features.repo_path`` from config and registers it (``feast apply``). Two rows of one
    entity at the same instant keep the last: an online store holds one value per entity and time.

    Returns:
        The path of ``features.parquet``.

    Raises:
        DatasetError: the entity, timestamp, label or a feature column is missing, or timestamps are not times.
        ConfigError: the repository cannot be applied.
    """
    import numpy as np
    import pandas as pd

    from kfkit.data.layout import feature_columns
    from kfkit.features.repo import apply, generate_repo

    dataset = cfg.dataset
    key, ts = dataset.entity_column, dataset.timestamp_column
    features = feature_columns(frame, dataset)
    missing = [c for c in (key, ts, dataset.label) if not c or c not in frame.columns]
    if missing or not features:
        raise DatasetError(
            f"the Feast offline source needs dataset.entity_column={key!r}, dataset.timestamp_column={ts!r}, "
            f"dataset.label={dataset.label!r} and feature columns; missing {missing or 'features'} in "
            f"{list(frame.columns)[:40]}"
        )
    try:
        times = pd.to_datetime(frame[ts], utc=True)
    except (ValueError, TypeError) as e:
        raise DatasetError(f"dataset.timestamp_column={ts!r} does not hold times: {e}") from e
    integer = pd.api.types.is_integer_dtype(frame[key])
    ids = frame[key].astype("int64") if integer else frame[key].astype(str)
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    rows = pd.DataFrame({key: ids, ts: times})
    rows[features] = frame[features].to_numpy(np.float32)
    rows = rows.drop_duplicates([key, ts], keep="last")
    rows.to_parquet(out / FEATURES_FILE, index=False)
    pd.DataFrame({key: ids, ts: times, dataset.label: frame[dataset.label].to_numpy()}).to_parquet(
        out / LABELS_FILE, index=False
    )
    spec = FeatureSpec(
        project=cfg.features.project, entity=cfg.features.entity, join_key=key,
        join_key_type="int64" if integer else "string", view=cfg.features.view, features=features, timestamp=ts,
        label=dataset.label, source=str(out / FEATURES_FILE), labels=str(out / LABELS_FILE),
        ttl_s=cfg.features.ttl_s, stale_policy=cfg.features.stale_policy, transforms=dict(cfg.features.transforms),
    )  # fmt: skip
    apply(generate_repo(cfg.features, spec))
    return out / FEATURES_FILE
