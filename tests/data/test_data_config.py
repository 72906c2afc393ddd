"""data.* and training.data: checked when the config is composed, with the key, the value and what is accepted."""

import pytest

from kfkit.config import compose
from kfkit.errors import ConfigError


def test_defaults_are_pandas_in_memory():
    cfg = compose([])
    assert (cfg.data.engine, cfg.training.data, cfg.data.spark.master) == ("pandas", "memory", "local[*]")
    assert cfg.data.shard_rows == cfg.data.shuffle_buffer_rows == 1_000_000
    spark = compose(["data.engine=spark", "training.data=stream", "data.spark.master=k8s",
                     "data.spark.dynamic_allocation=true", "data.spark.driver_memory=512m"])  # fmt: skip
    assert (spark.data.engine, spark.training.data, spark.data.spark.driver_memory) == ("spark", "stream", "512m")


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("data.engine=dask", r"data.engine='dask' is not one of pandas, spark"),
        ("training.data=disk", r"training.data='disk' is not one of memory, stream"),
        ("data.spark.master=yarn", r"data.spark.master='yarn' is not local, local\[N\], local\[\*\] or k8s"),
        ("data.spark.driver_memory=lots", r"data.spark.driver_memory='lots' is not a JVM memory size; use e.g. 512m"),
        ("data.shard_rows=0", r"data.shard_rows=0 must be at least 1"),
        ("data.spark.max_executors=0", r"data.spark.max_executors=0 is below data.spark.min_executors=1"),
        ("data.spark.namespace=Team_A", r"data.spark.namespace='Team_A' is not a Kubernetes namespace name"),
        ("data.split_key=malignant", r"data.split_key='malignant' is the label"),
    ],
)
def test_bad_values_name_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        compose([override])
