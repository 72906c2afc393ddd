"""Fixtures for the prep tests: one local SparkSession for the whole test session (its JVM takes ~10 s)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def spark():
    """A local[2] session, 1g of driver heap, bound to 127.0.0.1; stopped at the end."""
    if shutil.which("java") is None:
        pytest.skip("missing tool: java (Java 17) is needed by PySpark; apt-get install openjdk-17-jre-headless")
    from kfkit.config.data import SparkConfig
    from kfkit.data.spark_prep import spark_session

    session = spark_session(SparkConfig(master="local[2]", driver_memory="1g", shuffle_partitions=2))
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
