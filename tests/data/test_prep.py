"""Data sources, schema checks and the split, called directly."""

import numpy as np
import pandas as pd
import pytest

from kfkit.config import compose
from kfkit.data.prep import load_prepared, prepare
from kfkit.data.sources import breast_cancer, synthetic_fraud
from kfkit.errors import DatasetError


def test_breast_cancer_is_the_bundled_set_with_malignant_positive():
    frame = breast_cancer()
    assert frame.shape == (569, 31)
    assert int(frame["malignant"].sum()) == 212  # scikit-learn: 212 malignant, 357 benign
    assert "mean_radius" in frame.columns


def test_synthetic_fraud_is_seeded_and_rare():
    a = synthetic_fraud(n_rows=20_000, positive_rate=0.02, seed=7)
    b = synthetic_fraud(n_rows=20_000, positive_rate=0.02, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert 0.015 < a["is_fraud"].mean() < 0.025
    features = [c for c in a.columns if c not in ("is_fraud", "card_id", "event_timestamp")]
    assert len(features) == 30
    assert a["event_timestamp"].is_monotonic_increasing
    assert not synthetic_fraud(n_rows=1000, seed=8).equals(synthetic_fraud(n_rows=1000, seed=7))


def test_synthetic_drift_moves_feature_means():
    base = synthetic_fraud(n_rows=5000, seed=1)
    drifted = synthetic_fraud(n_rows=5000, seed=1, drift=1.0)
    assert drifted["v02"].mean() - base["v02"].mean() == pytest.approx(1.0, abs=1e-4)
    assert drifted["v01"].mean() == pytest.approx(base["v01"].mean())


def test_prepare_writes_stratified_splits(tmp_path):
    cfg = compose([])
    prepared = prepare(cfg.dataset, tmp_path)
    assert sum(prepared.rows.values()) == 569
    assert prepared.rows["test"] == pytest.approx(569 * 0.2, abs=2)
    rates = [prepared.positives[s] / prepared.rows[s] for s in ("train", "val", "test")]
    assert max(rates) - min(rates) < 0.02
    assert len(prepared.feature_names) == 30
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert test[prepared.feature_names].dtypes.eq(np.float32).all()
    assert load_prepared(tmp_path) == prepared
    assert (tmp_path / "stats.json").is_file()


def test_synthetic_keeps_entity_and_timestamp_out_of_features(tmp_path):
    cfg = compose(["dataset=synthetic_fraud", "dataset.n_rows=3000"])
    prepared = prepare(cfg.dataset, tmp_path)
    assert "card_id" not in prepared.feature_names
    assert "event_timestamp" not in prepared.feature_names
    assert {"card_id", "event_timestamp"} <= set(pd.read_parquet(tmp_path / "train.parquet").columns)


def _csv_cfg(path, *extra):
    return compose(["dataset=csv", f"dataset.path={path}", "dataset.label=y", *extra]).dataset


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DatasetError, match="nope.csv"):
        prepare(_csv_cfg(tmp_path / "nope.csv"), tmp_path / "out")


def test_nan_rows_are_reported_or_dropped(tmp_path):
    frame = pd.DataFrame({"a": np.arange(40.0), "b": np.ones(40), "y": [0, 1] * 20})
    frame.loc[[4, 9], "a"] = np.nan
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"2 rows .*rows \[4, 9\].*drop_na=true"):
        prepare(_csv_cfg(path), tmp_path / "out")
    prepared = prepare(_csv_cfg(path, "dataset.drop_na=true"), tmp_path / "out")
    assert sum(prepared.rows.values()) == 38


def test_infinite_values_name_their_own_columns_and_rows(tmp_path):
    frame = pd.DataFrame({f"f{i}": np.arange(40.0) for i in range(6)} | {"y": [0, 1] * 20})
    frame.loc[[3, 17], "f4"] = np.inf
    frame.loc[8, "f5"] = -np.inf
    frame.loc[11, "f1"] = np.nan
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DatasetError) as raised:
        prepare(_csv_cfg(path), tmp_path / "out")
    message = str(raised.value)
    assert "4 rows" in message
    assert "column 'f4' has 2 infinite value(s) (rows [3, 17])" in message
    assert "column 'f5' has 1 infinite value(s) (rows [8])" in message
    assert "column 'f1' has 1 missing value(s) (rows [11])" in message
    assert "'f0'" not in message and "'f2'" not in message and "'f3'" not in message


def test_schema_errors_name_the_column(tmp_path):
    frame = pd.DataFrame({"a": ["x", "y"] * 10, "b": np.ones(20), "y": [0, 1] * 10})
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)
    with pytest.raises(DatasetError, match="'a'"):
        prepare(_csv_cfg(path, "dataset.features=[a,b]"), tmp_path / "out")
    with pytest.raises(DatasetError, match="missing_col"):
        prepare(_csv_cfg(path, "dataset.features=[missing_col]"), tmp_path / "out")
    frame["y"] = [0, 2] * 10
    frame.to_parquet(path)
    with pytest.raises(DatasetError, match="0/1"):
        prepare(_csv_cfg(path, "dataset.features=[b]"), tmp_path / "out")
