"""One prep, two engines: Spark splits, statistics, reference sample and messages equal pandas's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from kfkit.config import compose
from kfkit.data.prep import SPLITS, load_prepared, prepare
from kfkit.data.shards import write_synthetic_shards
from kfkit.data.split import reference_hash, split_hash, xxhash64
from kfkit.errors import DatasetError

pytestmark = pytest.mark.slow  # a shared local Spark session: ~10 s to start, 1-5 s per prep

STATS_RTOL = 1e-9
"""Tolerance on stats.json: both engines sum in float64, in different orders."""


def configs(*overrides: str):
    """The same config for the pandas and the Spark engine."""
    pandas = compose(list(overrides))
    spark_overrides = ["data.engine=spark", "data.spark.master='local[2]'", "data.spark.shuffle_partitions=2"]
    spark = compose([*overrides, *spark_overrides])
    return pandas, spark


def run_both(tmp_path: Path, *overrides: str, name: str = "run"):
    pandas_cfg, spark_cfg = configs(*overrides)
    out = {}
    for engine, cfg in (("pandas", pandas_cfg), ("spark", spark_cfg)):
        folder = tmp_path / f"{name}-{engine}"
        out[engine] = (prepare(cfg.dataset, folder, data=cfg.data, reference_rows=300), folder)
    return out


def assert_same_output(result: dict) -> None:
    (a, pa_dir), (b, sp_dir) = result["pandas"], result["spark"]
    assert (a.feature_names, a.label, a.rows, a.positives) == (b.feature_names, b.label, b.rows, b.positives)
    assert (a.engine, b.engine) == ("pandas", "spark")
    for split in (*SPLITS, "reference"):
        left, right = pd.read_parquet(pa_dir / f"{split}.parquet"), pd.read_parquet(sp_dir / f"{split}.parquet")
        pd.testing.assert_frame_equal(left, right)  # the same rows, in the same order, with the same types
    stats_a, stats_b = (json.loads((d / "stats.json").read_text()) for d in (pa_dir, sp_dir))
    assert stats_a.keys() == stats_b.keys() == set(a.feature_names)
    for feature, values in stats_a.items():
        for key, value in values.items():
            assert stats_b[feature][key] == pytest.approx(value, rel=STATS_RTOL, abs=1e-12), (feature, key)
    assert load_prepared(sp_dir) == b


def test_numpy_xxhash64_is_sparks_bit_for_bit(spark):
    from pyspark.sql import functions as sf

    rng = np.random.default_rng(0)
    keys = np.concatenate([rng.integers(-(2**63), 2**63 - 1, 500, dtype=np.int64),
                           np.array([0, 1, -1, 2**63 - 1, -(2**63)], dtype=np.int64)])  # fmt: skip
    frame = spark.createDataFrame(pd.DataFrame({"k": keys}))
    rows = frame.select(
        sf.xxhash64("k").alias("plain"),
        sf.xxhash64(sf.col("k"), sf.lit(7).cast("bigint")).alias("split"),
        sf.xxhash64(sf.col("k"), sf.lit(7).cast("bigint"), sf.lit(1).cast("bigint")).alias("ref"),
    ).toPandas()
    assert np.array_equal(rows["plain"].to_numpy(), xxhash64(keys))
    assert np.array_equal(rows["split"].to_numpy(), split_hash(keys, 7))
    assert np.array_equal(rows["ref"].to_numpy(), reference_hash(split_hash(keys, 7)))


def test_breast_cancer_splits_and_stats_agree(spark, tmp_path):
    assert_same_output(run_both(tmp_path))


def test_sharded_parquet_input_agrees_with_an_entity_split_key(spark, tmp_path):
    write_synthetic_shards(tmp_path / "shards", n_rows=12_000, shard_rows=5_000, seed=3)
    common = ["dataset=csv", f"dataset.path={tmp_path / 'shards'}", "dataset.label=is_fraud", "data.shard_rows=2000",
              "dataset.entity_column=card_id", "dataset.timestamp_column=event_timestamp"]  # fmt: skip
    by_row = run_both(tmp_path, *common, name="row")
    assert_same_output(by_row)
    prepared, folder = by_row["spark"]
    assert sum(prepared.rows.values()) == 12_000
    groups = [pq.ParquetFile(folder / "train.parquet").metadata.row_group(i).num_rows
              for i in range(pq.ParquetFile(folder / "train.parquet").metadata.num_row_groups)]  # fmt: skip
    assert groups[:-1] == [2000] * (len(groups) - 1) and sum(groups) == prepared.rows["train"]
    by_card = run_both(tmp_path, *common, "data.split_key=card_id", name="card")
    assert_same_output(by_card)
    train = pd.read_parquet(by_card["spark"][1] / "train.parquet")
    assert not train.equals(pd.read_parquet(folder / "train.parquet"))  # the key changes the split


def test_csv_input_and_drop_na_agree(spark, tmp_path):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"a": rng.normal(size=400), "b": rng.integers(0, 9, 400), "y": (rng.random(400) < 0.3) * 1})
    frame.loc[[3, 50, 51], "a"] = np.nan
    frame.loc[[7], "a"] = np.inf
    frame.to_csv(tmp_path / "data.csv", index=False)
    assert_same_output(run_both(tmp_path, "dataset=csv", f"dataset.path={tmp_path / 'data.csv'}", "dataset.label=y",
                                "dataset.drop_na=true"))  # fmt: skip


def test_in_memory_synthetic_kind_agrees(spark, tmp_path):
    assert_same_output(run_both(tmp_path, "dataset=synthetic_fraud", "dataset.n_rows=6000"))


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def _nan_frame() -> pd.DataFrame:
    frame = pd.DataFrame({f"f{i}": np.arange(40.0) for i in range(4)} | {"y": [0, 1] * 20})
    frame.loc[[3, 17, 20, 21, 22, 30], "f2"] = np.inf
    frame.loc[8, "f3"] = -np.inf
    frame.loc[[11, 12], "f1"] = np.nan
    return frame


MALFORMED = {
    "missing column": (lambda: pd.DataFrame({"a": np.ones(20), "y": [0, 1] * 10}), ["dataset.features=[a,nope]"]),
    "non-numeric": (lambda: pd.DataFrame({"a": ["x", "z"] * 10, "b": np.ones(20), "y": [0, 1] * 10}),
                    ["dataset.features=[a,b]"]),
    "no features": (lambda: pd.DataFrame({"a": ["x", "z"] * 10, "y": [0, 1] * 10}), []),
    "nan and inf with rows": (_nan_frame, []),
    "bad label": (lambda: pd.DataFrame({"a": np.ones(20), "y": [0, 2, 1, 5] * 5}), []),
    "string label": (lambda: pd.DataFrame({"a": np.ones(20), "y": ["no", "yes"] * 10}), []),
    "too few positives": (lambda: pd.DataFrame({"a": np.ones(20), "y": [0] * 19 + [1]}), []),
}  # fmt: skip


# Every case from Parquet; from CSV too where Spark's and pandas's type inference could disagree.
CASES = [(case, ".parquet") for case in sorted(MALFORMED)] + [
    (case, ".csv") for case in ("nan and inf with rows", "bad label", "string label", "non-numeric")
]


@pytest.mark.parametrize(("case", "suffix"), CASES)
def test_malformed_input_fails_with_the_same_message(spark, tmp_path, case, suffix):
    make, extra = MALFORMED[case]
    path = _write(make(), tmp_path / f"data{suffix}")
    messages = []
    for cfg in configs("dataset=csv", f"dataset.path={path}", "dataset.label=y", *extra):
        with pytest.raises(DatasetError) as raised:
            prepare(cfg.dataset, tmp_path / "out", data=cfg.data)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    expected = {
        "missing column": "columns ['nope'] not found",
        "non-numeric": "feature columns ['a'] are not numeric",
        "no features": "no numeric feature columns found",
        "nan and inf with rows": "column 'f2' has 6 infinite value(s) (rows [3, 17, 20, 21, 22] ...)",
        "bad label": "must be 0/1; found values ['0', '1', '2', '5']",
        "string label": "must be 0/1; found values ['no', 'yes']",
        "too few positives": "needs at least 2 rows of each class to split; has {0: 19, 1: 1}",
    }[case]
    assert expected in messages[0]
    if case == "nan and inf with rows":
        assert messages[0].startswith("9 rows have missing or infinite values")
        assert "column 'f1' has 2 missing value(s) (rows [11, 12])" in messages[0]
        assert "column 'f3' has 1 infinite value(s) (rows [8])" in messages[0]
