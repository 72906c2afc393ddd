"""The Spark engine of prep: the pandas engine's checks, split and layout, in memory that does not grow with rows.

Rows are numbered by their position in the input (Parquet: the file's row index plus the rows of the
files before it; CSV: Spark's partition order, which for one file is file order), so the messages and
the hash split (:mod:`kfkit.data.split`) name the same rows pandas does. The passes over the data:

1. per (label value, hash bucket): rows, clean rows and the NaN/null/inf cells of each column (one
   aggregation); with bad cells and no ``dataset.drop_na``, the first rows of each bad column, and the error;
2. only the rows of the buckets holding a cut (a filtered scan): the exact cut points;
3. the split written in contiguous chunks of rows, each sorted by row (a hash-partitioned shuffle on the
   chunk number, spilled to disk as it needs: no sampling pass, as a range partitioning would need).

Spark writes one part file per (split, chunk); :func:`kfkit.data.merge.merge_parts` streams them, in row
order, into the one file per split later steps read, in row groups of ``data.shard_rows``, and on the way
computes the training split's statistics and draws the drift reference sample (bounded: one batch and
the sample in memory). PySpark is imported here only (it is heavy).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.data import checks
from kfkit.data.layout import REFERENCE_FILE, PreparedData, check_splits, write_metadata
from kfkit.data.merge import REF, ROW, merge_parts
from kfkit.data.split import BUCKET_SHIFT, SPLIT_CODES, locate, split_sizes
from kfkit.errors import DatasetError

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

    from kfkit.config import DatasetConfig
    from kfkit.config.data import DataConfig, SparkConfig

__all__ = ["prepare_spark", "spark_session"]

HASH = "_kfkit_hash"
SPLIT = "_kfkit_split"
CHUNK = "_kfkit_chunk"
_BUCKETS = 1 << (64 - BUCKET_SHIFT)
# Groups read back from the one (label, hash bucket) aggregation: every group two 0/1 labels can make, plus
# room to see enough of a bad label's values (a float label would make millions of groups).
_GROUP_LIMIT = 2 * _BUCKETS + 10_000
_CHUNKS_PER_PARTITION = 4  # row chunks per shuffle partition: evens out the hash partitioning of chunk ids


def spark_session(spark: SparkConfig, *, app_name: str = "kfkit-prep") -> SparkSession:
    """The active SparkSession, or a new one as ``data.spark`` says (local masters bind to 127.0.0.1).

    A session already running (a test's, or the one spark-submit made in a SparkApplication's driver)
    is reused as it is: a JVM's memory cannot change once it runs.
    """
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    builder = SparkSession.builder.appName(app_name)
    settings = {
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if spark.master != "k8s":  # in a SparkApplication, spark-submit already set master and memory
        builder = builder.master(spark.master)
        settings |= {
            "spark.driver.memory": spark.driver_memory,
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.host": "127.0.0.1",
        }
        if spark.local_dir:
            settings["spark.local.dir"] = spark.local_dir
    for key, value in {**settings, **spark.conf}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def prepare_spark(
    cfg: DatasetConfig, out_dir: str | Path, *, data: DataConfig, reference_rows: int = 1000
) -> PreparedData:
    """:func:`kfkit.data.prep.prepare` with Spark: the same checks, messages, split and files.

    Raises:
        DatasetError: the input is missing, unreadable, or fails a schema check.
    """
    out = Path(out_dir)
    work = out / ".spark-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        session = spark_session(data.spark)
        frame = _read(session, cfg, work)
        features = _feature_columns(frame, cfg)
        frame, facts = _validate(frame, cfg, features, data.split_key)
        return _split_and_write(frame, cfg, data, features, facts, out, work, reference_rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read(session: SparkSession, cfg: DatasetConfig, work: Path) -> DataFrame:
    """The input with its row number in :data:`ROW`."""
    from pyspark.sql import functions as sf
    from pyspark.sql.utils import AnalysisException

    from kfkit.data.sources import dataset_file, load, parquet_files

    if cfg.kind != "csv":  # generated in memory: small by nature; Spark reads it like any Parquet input
        source = work / "input.parquet"
        load(cfg).to_parquet(source, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    else:
        source = dataset_file(cfg.path or "")
    suffix = source.suffix.lower()
    try:
        if source.is_dir() or suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            files = parquet_files(source)
            offsets, seen = {}, 0
            for file in files:
                offsets[file.name] = seen
                seen += pq.ParquetFile(file).metadata.num_rows
            frame = session.read.parquet(*[str(f) for f in files])
            name = sf.regexp_extract(sf.col("_metadata.file_path"), r"([^/]+)$", 1)
            offset = sf.create_map(*[sf.lit(x) for pair in offsets.items() for x in pair])[name]
            return frame.withColumn(ROW, offset + sf.col("_metadata.row_index"))
        if suffix in (".csv", ".txt"):
            # pandas writes and reads inf as "inf"; Spark's default spelling is "Inf".
            frame = session.read.csv(str(source), header=True, inferSchema=True, positiveInf="inf", negativeInf="-inf")
            return _number_rows(frame)
    except (AnalysisException, OSError, ValueError) as e:
        raise DatasetError(f"dataset.path={cfg.path!r} cannot be read: {e}") from e
    raise DatasetError(f"dataset.path={cfg.path!r}: unknown file type {suffix!r}; use .csv or .parquet")


def _number_rows(frame: DataFrame) -> DataFrame:
    """Number rows in partition order (one pass to count each partition's rows; file order for one file)."""
    from pyspark.sql import functions as sf

    ids = frame.withColumn("_kfkit_id", sf.monotonically_increasing_id())
    part = sf.shiftright(sf.col("_kfkit_id"), 33)  # monotonically_increasing_id: partition id in the top bits
    counts = sorted(ids.groupBy(part.alias("p")).count().collect())
    offsets, seen = [], 0
    for row in counts:
        offsets += [sf.lit(row["p"]), sf.lit(seen)]
        seen += row["count"]
    position = sf.col("_kfkit_id") - sf.shiftleft(part, 33)
    return ids.withColumn(ROW, sf.create_map(*offsets)[part] + position).drop("_kfkit_id")


def _numeric(frame: DataFrame, column: str) -> bool:
    from pyspark.sql.types import BooleanType, NumericType

    return isinstance(frame.schema[column].dataType, NumericType | BooleanType)  # pandas counts bool as numeric


def _floating(frame: DataFrame, column: str) -> bool:
    from pyspark.sql.types import DoubleType, FloatType

    return isinstance(frame.schema[column].dataType, DoubleType | FloatType)


def _feature_columns(frame: DataFrame, cfg: DatasetConfig) -> list[str]:
    if cfg.features:
        return list(cfg.features)
    excluded = {cfg.label, cfg.entity_column, cfg.timestamp_column, ROW}
    return [c for c in frame.columns if c not in excluded and _numeric(frame, c)]


def _validate(
    frame: DataFrame, cfg: DatasetConfig, features: list[str], split_key: str | None
) -> tuple[DataFrame, dict[str, Any]]:
    """:func:`kfkit.data.prep.validate_frame` in Spark, with the hash and the bucket counts the split needs.

    Returns:
        The clean rows (with :data:`HASH`), and the facts: ``counts`` (clean rows per class, in pandas'
        value_counts order), ``buckets`` (clean rows per class and hash bucket) and ``rows`` (input rows).
    """
    from pyspark.sql import functions as sf

    columns = [c for c in frame.columns if c != ROW]
    missing = [c for c in [*features, cfg.label] if c not in columns]
    if missing:
        raise checks.missing_columns(missing, columns)
    if not features:
        raise checks.no_features()
    non_numeric = [c for c in features if not _numeric(frame, c)]
    if non_numeric:
        raise checks.non_numeric(non_numeric)
    if split_key is not None:
        _check_key(frame, split_key)
    key = sf.col(ROW) if split_key is None else sf.col(split_key)
    frame = frame.withColumn(HASH, sf.xxhash64(key.cast("bigint"), sf.lit(cfg.seed).cast("bigint")))
    conditions: list[tuple[str, str, Column]] = []
    for column in [*features, cfg.label]:
        col = sf.col(column)
        floating = _floating(frame, column)
        conditions.append((column, "missing", col.isNull() | sf.isnan(col) if floating else col.isNull()))
        if column in features and floating:
            conditions.append((column, "infinite", col.isin(float("inf"), float("-inf"))))
    bad = sf.lit(False)
    for _, _, condition in conditions:
        bad = bad | sf.coalesce(condition, sf.lit(False))
    groups = (
        frame.groupBy(sf.col(cfg.label).alias("label"), sf.shiftright(sf.col(HASH), BUCKET_SHIFT).alias("b"))
        .agg(
            sf.count_if(bad).alias("bad"),
            sf.count_if(~bad).alias("clean"),
            sf.min(sf.when(~bad, sf.col(ROW))).alias("first"),
            *[sf.count_if(c).alias(f"c{i}") for i, (_, _, c) in enumerate(conditions)],
        )
        .limit(_GROUP_LIMIT)
        .cache()  # small: at most _GROUP_LIMIT rows, read twice below
    )
    try:
        sums = [sf.sum(name).alias(name) for name in ("bad", "clean", *[f"c{i}" for i in range(len(conditions))])]
        labels = groups.groupBy("label").agg(*sums, sf.min("first").alias("first")).collect()
        bad_rows = sum(g["bad"] for g in labels)
        if bad_rows and not cfg.drop_na:
            cells = []
            for i, (column, kind, condition) in enumerate(conditions):
                if count := sum(g[f"c{i}"] for g in labels):
                    first = frame.filter(condition).select(ROW).orderBy(ROW).limit(checks.ROW_LIMIT).collect()
                    cells.append((column, kind, count, [r[0] for r in first]))
            raise checks.bad_values(bad_rows, cells)
        clean = sorted((g for g in labels if g["clean"]), key=lambda g: (-g["clean"], g["first"]))
        values = [g["label"] for g in clean]
        if not checks.labels_ok(values):
            raise checks.bad_labels(cfg.label, values)
        counts: dict[int, int] = {}
        for g in clean:
            counts[int(g["label"])] = counts.get(int(g["label"]), 0) + g["clean"]
        if counts.get(1, 0) < 2 or counts.get(0, 0) < 2:
            raise checks.too_few_per_class(cfg.label, counts)
        buckets: dict[int, dict[int, int]] = {}
        for row in groups.filter(sf.col("clean") > 0).select(sf.col("label").cast("bigint"), "b", "clean").collect():
            per_label = buckets.setdefault(row[0], {})
            per_label[row[1]] = per_label.get(row[1], 0) + row[2]
    finally:
        groups.unpersist()
    if bad_rows:
        frame = frame.filter(~bad)
    return frame, {"counts": counts, "buckets": buckets, "rows": sum(g["bad"] + g["clean"] for g in labels)}


def _check_key(frame: DataFrame, column: str) -> None:
    from pyspark.sql.types import ByteType, IntegerType, LongType, ShortType

    if column not in frame.columns:
        raise DatasetError(f"data.split_key={column!r} is not a column; the data has {frame.columns[:40]}")
    kind = frame.schema[column].dataType
    if not isinstance(kind, ByteType | ShortType | IntegerType | LongType):
        raise DatasetError(
            f"data.split_key={column!r} has type {kind.simpleString()}, not an integer; name an integer id column"
        )
    if frame.filter(frame[column].isNull()).limit(1).count():
        raise DatasetError(f"data.split_key={column!r} has missing values; every row needs a key")


def _split_and_write(
    frame: DataFrame,
    cfg: DatasetConfig,
    data: DataConfig,
    features: list[str],
    facts: dict[str, Any],
    out: Path,
    work: Path,
    reference_rows: int,
) -> PreparedData:
    from pyspark.sql import functions as sf

    label = sf.col(cfg.label).cast("bigint")
    counts = facts["counts"]
    sizes = {y: split_sizes(n, cfg.val_fraction, cfg.test_fraction) for y, n in counts.items()}
    rows = {split: sum(s[code] for s in sizes.values()) for split, code in SPLIT_CODES.items()}
    check_splits(rows, sum(counts.values()), cfg)
    cuts = _cut_points(frame.select(label.alias("y"), HASH, ROW), sizes, facts["buckets"])

    def before(cut: tuple[int, int] | None) -> Column:
        if cut is None:
            return sf.lit(True)
        return (sf.col(HASH) < sf.lit(cut[0])) | ((sf.col(HASH) == sf.lit(cut[0])) & (sf.col(ROW) < sf.lit(cut[1])))

    code = sf.lit(SPLIT_CODES["test"])
    for y, (val_cut, test_cut) in cuts.items():
        code = sf.when(label == y, sf.when(before(val_cut), 0).when(before(test_cut), 1).otherwise(2)).otherwise(code)
    keep = [c for c in [*features, cfg.label, cfg.entity_column, cfg.timestamp_column] if c and c in frame.columns]
    typed = [sf.col(c).cast("float").alias(c) for c in features] + [label.alias(cfg.label)]
    typed += [sf.col(c) for c in keep[len(features) + 1 :]]
    key = sf.col(ROW) if data.split_key is None else sf.col(data.split_key)
    # Spark chains xxhash64's seeds, so this is XXH64(1) seeded by the split hash, as split.reference_hash.
    reference = sf.xxhash64(key.cast("bigint"), sf.lit(cfg.seed).cast("bigint"), sf.lit(1).cast("bigint"))
    chunks = data.spark.shuffle_partitions * _CHUNKS_PER_PARTITION
    chunk = (sf.col(ROW) * chunks / sf.lit(max(facts["rows"], 1))).cast("int")  # contiguous runs of rows
    parts = work / "parts"
    (
        frame.select(*typed, sf.col(ROW), reference.alias(REF), code.alias(SPLIT), chunk.alias(CHUNK))
        .repartition(data.spark.shuffle_partitions, CHUNK)
        .sortWithinPartitions(SPLIT, CHUNK, ROW)
        .write.partitionBy(SPLIT, CHUNK)
        .parquet(str(parts))
    )
    positives, stats, sample = {}, {}, None
    for split, split_code in SPLIT_CODES.items():
        folder = parts / f"{SPLIT}={split_code}"
        files = [f for c in range(chunks + 1) for f in sorted((folder / f"{CHUNK}={c}").glob("*.parquet"))]
        merged = merge_parts(files, out / f"{split}.parquet", keep, cfg.label, data.shard_rows,
                        features=features if split == "train" else None, reference_rows=reference_rows)  # fmt: skip
        if merged["rows"] != rows[split]:
            raise DatasetError(f"Spark wrote {merged['rows']} {split} rows, expected {rows[split]}; rerun prep")
        positives[split] = merged["positives"]
        if split == "train":
            stats, sample = merged["stats"], merged["sample"]
    sample.to_parquet(out / REFERENCE_FILE, index=False)
    prepared = PreparedData(str(out), features, cfg.label, rows, positives, engine="spark")
    write_metadata(out, prepared, stats)
    return prepared


def _cut_points(
    frame: DataFrame, sizes: dict[int, tuple[int, int, int]], buckets: dict[int, dict[int, int]]
) -> dict[int, tuple[tuple[int, int] | None, tuple[int, int] | None]]:
    """Per label, the (hash, row) of its first val row and first test row (None: no such row)."""
    from pyspark.sql import functions as sf

    bucket = sf.shiftright(sf.col(HASH), BUCKET_SHIFT)
    wanted: dict[tuple[int, int], list[tuple[str, int, int]]] = {}  # (label, bucket) -> [(which, y, rank)]
    for y, (n_train, n_val, _) in sizes.items():
        for which, rank in (("val", n_train), ("test", n_train + n_val)):
            if found := locate(buckets[y], rank):
                wanted.setdefault((y, found[0]), []).append((which, y, found[1]))
    cuts: dict[int, dict[str, tuple[int, int] | None]] = {y: {"val": None, "test": None} for y in sizes}
    if wanted:
        condition = sf.lit(False)
        for y, b in wanted:
            condition = condition | ((sf.col("y") == y) & (bucket == b))
        rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for row in frame.filter(condition).select("y", HASH, ROW, bucket.alias("b")).collect():
            rows.setdefault((row["y"], row["b"]), []).append((row[HASH], row[ROW]))
        for where, targets in wanted.items():
            ordered = sorted(rows[where])
            for which, y, rank in targets:
                cuts[y][which] = ordered[rank]
    return {y: (c["val"], c["test"]) for y, c in cuts.items()}
