"""Training rows by point-in-time historical retrieval from the feature repository (no value from after a label)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import DatasetError

if TYPE_CHECKING:
    import pandas as pd

    from kfkit.config import KfkitConfig

__all__ = ["training_frame", "historical_frame", "historical_features"]

_ROW = "__kfkit_row"  # carried through Feast's join to give the rows back in the labels' order


def training_frame(cfg: KfkitConfig) -> pd.DataFrame:
    """What prep trains on when ``features.enabled``: the dataset, via the feature repository.

    The dataset is written as the repository's offline source, then read back by point-in-time retrieval,
    so training and serving read one feature repository.

    Raises:
        DatasetError: the dataset lacks the entity, timestamp or label column, or retrieval fails.
        ConfigError: the repository cannot be applied or opened.
    """
    from kfkit.data.sources import load
    from kfkit.features.offline import write_offline_source

    write_offline_source(load(cfg.dataset), cfg, Path(cfg.features.repo_path).expanduser().resolve() / "data")
    return historical_frame(cfg)


def historical_frame(cfg: KfkitConfig) -> pd.DataFrame:
    """The training frame of ``features.repo_path``: its label rows with features joined as of each row's time.

    Feed it to ``kfkit.data.prep.prepare(cfg.dataset, out_dir, frame=...)``.

    Returns:
        Features (after :func:`~kfkit.features.preprocess.preprocess`), label, entity and timestamp columns,
        one row per label row, in the labels file's order. A label with no feature value at or before its
        time (within the TTL) has NaN features: prep's ``dataset.drop_na`` decides.

    Raises:
        ConfigError: the repository cannot be opened.
        DatasetError: the labels file cannot be read or Feast's retrieval fails.
    """
    import pandas as pd

    from kfkit.features.spec import load_spec

    repo = Path(cfg.features.repo_path).expanduser().resolve()
    spec = load_spec(repo)
    try:
        labels = pd.read_parquet(spec.labels)
    except (OSError, ValueError) as e:
        raise DatasetError(f"labels file {spec.labels} cannot be read ({e}); rerun prep to write it") from e
    return historical_features(repo, labels)


def historical_features(repo: str | Path, entity_rows: pd.DataFrame) -> pd.DataFrame:
    """``entity_rows`` (entity id, event timestamp, any other columns) with the view's features as of each row.

    Point-in-time correct (Feast's join): a row gets the latest feature value whose event time is at or
    before its own and within the view's TTL, never a later one.

    Raises:
        ConfigError: the repository cannot be opened.
        DatasetError: Feast's retrieval fails (a column missing, timestamps of the wrong type).
    """
    import pandas as pd

    from kfkit.features.preprocess import preprocess
    from kfkit.features.repo import open_store
    from kfkit.features.spec import load_spec

    spec = load_spec(repo)
    store = open_store(repo)
    entity_df = entity_rows.reset_index(drop=True).copy()
    entity_df[spec.timestamp] = pd.to_datetime(entity_df[spec.timestamp], utc=True)
    entity_df[_ROW] = range(len(entity_df))
    try:
        joined = store.get_historical_features(
            entity_df=entity_df, features=store.get_feature_service(spec.view)
        ).to_df()
    except Exception as e:  # Feast raises its own and pandas/dask types for a bad entity frame
        raise DatasetError(f"point-in-time retrieval from {repo} failed: {e}") from e
    # Feast's file store drops entity rows that find no value within the TTL (rather than giving them nulls):
    # join back on the row number, so every asked row comes back, in order, NaN where nothing was known.
    values = joined[[_ROW, *spec.features]].drop_duplicates(_ROW)
    rows = entity_df.drop(columns=[c for c in spec.features if c in entity_df.columns])
    out = rows.merge(values, on=_ROW, how="left", validate="one_to_one").sort_values(_ROW).reset_index(drop=True)
    out[spec.features] = preprocess(out[spec.features].to_numpy(), spec.features, spec.transforms)
    rest = [c for c in entity_rows.columns if c not in spec.features]
    return out[[*spec.features, *rest]]
