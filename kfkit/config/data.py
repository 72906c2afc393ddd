"""Config groups for the data-prep engine (pandas or Spark) and how training reads the prepared splits.

``data.engine`` picks who does prep's work (:mod:`kfkit.data.prep` dispatches); ``data.spark.*`` shapes
the Spark session on this machine (``master=local[*]``) or the SparkApplication submitted to the Spark
Operator (``master=k8s``). ``training.data`` (memory | stream) lives in the training group and is
checked here, with the streaming reader's own settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from kfkit.errors import ConfigError

__all__ = ["DataConfig", "SparkConfig", "ENGINES", "TRAINING_DATA", "check"]

ENGINES = ("pandas", "spark")
TRAINING_DATA = ("memory", "stream")
_QUANTITY = re.compile(r"[0-9]+[kmgt]?", re.IGNORECASE)  # Spark's JVM sizes: 512m, 2g
_LOCAL_MASTER = re.compile(r"local(\[([0-9]+|\*)\])?")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass
class SparkConfig:
    """The Spark engine: a local session on this machine, or a SparkApplication on the cluster."""

    master: str = "local[*]"
    """local[*] / local[N]: PySpark in this process's JVM (Java 17 needed); k8s: the prep step submits a
    SparkApplication (sparkoperator.k8s.io/v1beta2) to the Spark Operator and waits for it."""
    driver_memory: str = "2g"
    """JVM heap of the driver (spark.driver.memory): the whole of Spark's memory for local[*]."""
    driver_cores: int = 1
    """Driver CPU cores (cluster runs)."""
    executor_memory: str = "4g"
    """JVM heap per executor (cluster runs)."""
    executor_cores: int = 2
    """CPU cores per executor (cluster runs)."""
    executor_instances: int = 2
    """Executors of a cluster run (the initial count when dynamic allocation is on)."""
    dynamic_allocation: bool = False
    """Let Spark add and remove executors between min_executors and max_executors (shuffle tracking on)."""
    min_executors: int = 1
    """Fewest executors with dynamic allocation."""
    max_executors: int = 10
    """Most executors with dynamic allocation."""
    shuffle_partitions: int = 8
    """spark.sql.shuffle.partitions: the sort that orders each split; ~2-4 per core (200 on a big cluster)."""
    local_dir: Optional[str] = None
    """Where a local run spills (spark.local.dir); None: the system temp folder."""
    image: Optional[str] = None
    """Driver and executor image (kfkit with PySpark and Java 17); None uses images.main."""
    namespace: Optional[str] = None
    """Namespace of the SparkApplication; None uses deploy.namespace."""
    service_account: str = "spark-operator-spark"
    """Service account of the driver pod (it creates the executors): the Spark Operator chart's default."""
    spark_version: str = "4.1.1"
    """spec.sparkVersion of the SparkApplication (the image's Spark)."""
    timeout_s: int = 7200
    """How long the prep step waits for the SparkApplication; past it the application is deleted."""
    conf: dict[str, str] = field(default_factory=dict)
    """Extra Spark settings, e.g. {spark.sql.files.maxPartitionBytes: 256m}; they win over kfkit's."""


@dataclass
class DataConfig:
    """How prep does its work and writes its output, and how a streaming trainer reads it."""

    engine: str = "pandas"
    """pandas (the whole data set in one frame: right for a laptop) or spark (PySpark: flat memory, any size)."""
    split_key: Optional[str] = None
    """Integer column whose hash places each row in train/val/test (e.g. an entity id, so one entity's rows
    stay together); None: the row's position in the input."""
    shard_rows: int = 1_000_000
    """Rows per Parquet row group of the prepared splits (the unit training.data=stream reads), and per
    file of the sharded synthetic writer."""
    shuffle_buffer_rows: int = 1_000_000
    """training.data=stream: rows a rank holds and shuffles at once (bounds its memory); training.data=memory
    uses the same order, so both give the same weights."""
    spark: SparkConfig = field(default_factory=SparkConfig)
    """The Spark engine's session or SparkApplication."""


def check(data: DataConfig) -> None:
    """Check the ``data`` group (``training.data`` and the split key against the label: ``kfkit.config.validate``).

    Raises:
        ConfigError: naming the key, the value, and what would be accepted.
    """
    spark = data.spark
    if data.engine not in ENGINES:
        raise ConfigError(f"data.engine={data.engine!r} is not one of {', '.join(ENGINES)}")
    for key, number in (
        ("data.shard_rows", data.shard_rows),
        ("data.shuffle_buffer_rows", data.shuffle_buffer_rows),
        ("data.spark.driver_cores", spark.driver_cores),
        ("data.spark.executor_cores", spark.executor_cores),
        ("data.spark.executor_instances", spark.executor_instances),
        ("data.spark.min_executors", spark.min_executors),
        ("data.spark.shuffle_partitions", spark.shuffle_partitions),
        ("data.spark.timeout_s", spark.timeout_s),
    ):
        if number < 1:
            raise ConfigError(f"{key}={number} must be at least 1")
    if spark.max_executors < spark.min_executors:
        raise ConfigError(
            f"data.spark.max_executors={spark.max_executors} is below data.spark.min_executors={spark.min_executors}"
        )
    if spark.master != "k8s" and not _LOCAL_MASTER.fullmatch(spark.master):
        raise ConfigError(
            f"data.spark.master={spark.master!r} is not local, local[N], local[*] or k8s "
            "(k8s submits a SparkApplication to the Spark Operator)"
        )
    for key, size in (("data.spark.driver_memory", spark.driver_memory), ("data.spark.executor_memory",
                                                                          spark.executor_memory)):  # fmt: skip
        if not _QUANTITY.fullmatch(size):
            raise ConfigError(f"{key}={size!r} is not a JVM memory size; use e.g. 512m or 4g")
    if spark.namespace is not None and not _DNS_LABEL.fullmatch(spark.namespace):
        raise ConfigError(f"data.spark.namespace={spark.namespace!r} is not a Kubernetes namespace name")
