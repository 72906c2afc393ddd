"""Data sources, schema checks and the split, called directly."""

import numpy as np
import pandas as pd
import pytest

from kfkit.config import compose
from kfkit.data.prep import PreparedData, load_prepared, prepare
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


def test_split_is_exactly_stratified_and_a_function_of_the_keys(tmp_path):
    from kfkit.data.split import SPLIT_CODES, assign_splits, split_hash, split_sizes

    cfg = compose(["dataset=synthetic_fraud", "dataset.n_rows=5000"])
    first = prepare(cfg.dataset, tmp_path / "a")
    again = prepare(cfg.dataset, tmp_path / "b")
    for split in ("train", "val", "test"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / f"{split}.parquet"),
                                      pd.read_parquet(tmp_path / "b" / f"{split}.parquet"))  # fmt: skip
    assert first == PreparedData(**{**vars(again), "out_dir": first.out_dir})
    labels = np.array([0] * 900 + [1] * 100)
    codes = assign_splits(labels, split_hash(np.arange(1000), 42), np.arange(1000), val_fraction=0.15,
                          test_fraction=0.2)  # fmt: skip
    for label, count in ((0, 900), (1, 100)):
        sizes = [int(((labels == label) & (codes == code)).sum()) for code in SPLIT_CODES.values()]
        assert tuple(sizes) == split_sizes(count, 0.15, 0.2) == ((585, 135, 180) if label == 0 else (65, 15, 20))
    moved = assign_splits(labels, split_hash(np.arange(1000), 43), np.arange(1000), val_fraction=0.15,
                          test_fraction=0.2)  # fmt: skip
    assert (moved != codes).mean() > 0.3  # another seed draws another split


def test_row_groups_stats_and_reference(tmp_path):
    import json

    import pyarrow.parquet as pq

    cfg = compose(["dataset=synthetic_fraud", "dataset.n_rows=4000", "data.shard_rows=1000"])
    prepared = prepare(cfg.dataset, tmp_path, data=cfg.data, reference_rows=250)
    meta = pq.ParquetFile(tmp_path / "train.parquet").metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert groups == [1000, 1000, prepared.rows["train"] - 2000]
    train = pd.read_parquet(tmp_path / "train.parquet")
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["amount"]["mean"] == pytest.approx(train["amount"].astype("float64").mean(), rel=1e-12)
    assert stats["amount"]["std"] == pytest.approx(train["amount"].astype("float64").std(), rel=1e-12)
    reference = pd.read_parquet(tmp_path / "reference.parquet")
    assert list(reference.columns) == prepared.feature_names and len(reference) == 250
    assert reference.merge(train, on=prepared.feature_names).shape[0] == 250  # training rows only


def test_split_key_groups_an_entity_and_must_be_an_integer_column(tmp_path):
    cfg = compose(["dataset=synthetic_fraud", "dataset.n_rows=6000", "data.split_key=card_id"])
    prepare(cfg.dataset, tmp_path, data=cfg.data)
    cards = {s: set(pd.read_parquet(tmp_path / f"{s}.parquet")["card_id"]) for s in ("train", "val", "test")}
    shared = (cards["train"] & cards["val"]) | (cards["train"] & cards["test"]) | (cards["val"] & cards["test"])
    assert len(shared) <= 4  # only the cards straddling one of the 2 cuts per label
    bad = compose(["dataset=synthetic_fraud", "dataset.n_rows=600", "data.split_key=event_timestamp"])
    with pytest.raises(DatasetError, match="data.split_key='event_timestamp' has type .*not an integer"):
        prepare(bad.dataset, tmp_path / "bad", data=bad.data)


def test_sharded_synthetic_writer_is_seeded_per_shard(tmp_path):
    from kfkit.data.shards import write_synthetic_shards
    from kfkit.data.sources import read_table

    small = write_synthetic_shards(tmp_path / "small", n_rows=2500, shard_rows=1000, seed=5)
    large = write_synthetic_shards(tmp_path / "large", n_rows=5500, shard_rows=1000, seed=5)
    assert [p.name for p in small] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert len(large) == 6
    frame = read_table(str(tmp_path / "large"))
    assert len(frame) == 5500 and frame["event_timestamp"].is_monotonic_increasing
    assert 0.01 < frame["is_fraud"].mean() < 0.03
    features = [c for c in frame.columns if c not in ("is_fraud", "card_id", "event_timestamp")]
    assert len(features) == 30
    # a shard's rows depend on the seed and its index only (not on how many shards follow) ...
    a, b = pd.read_parquet(small[1]), pd.read_parquet(large[1])
    pd.testing.assert_frame_equal(a.drop(columns=["card_id", "event_timestamp"]),
                                  b.drop(columns=["card_id", "event_timestamp"]))  # fmt: skip
    # ... and fraud rows still differ from the rest where the signal is
    means = frame.groupby("is_fraud")["v01"].mean()
    assert abs(means[1] - means[0]) > 0.4
    with pytest.raises(DatasetError, match="folder without \\*.parquet"):
        read_table(str(tmp_path))


def test_prepare_run_reads_the_data_and_drift_sections(tmp_path):
    import pyarrow.parquet as pq

    from kfkit.data.prep import prepare_run

    cfg = compose(["dataset=synthetic_fraud", "dataset.n_rows=3000", "data.shard_rows=500", "drift.reference_rows=123"])
    prepared = prepare_run(cfg, tmp_path)
    assert prepared.engine == "pandas" and sum(prepared.rows.values()) == 3000
    assert len(pd.read_parquet(tmp_path / "reference.parquet")) == 123
    assert pq.ParquetFile(tmp_path / "train.parquet").metadata.row_group(0).num_rows == 500
