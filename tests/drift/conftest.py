"""Drift detector fixtures: a published version, a sink that records events, the detector as a process.

The detector runs with .venv-drift/bin/python only (as in production); the tests talk to it over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from drift_helpers import Detector, Sink, publish_version


@pytest.fixture(scope="session")
def version_uri(tmp_path_factory) -> str:
    """A file:// version whose drift settings make tests quick: 100-row windows, labels checked from 50."""
    drift = {"window_size": 100, "window_seconds": 0, "performance_min_labels": 50, "performance_window": 200}
    return publish_version(tmp_path_factory.mktemp("drift-version"), drift=drift, probabilities=True)


@pytest.fixture
def sink():
    server = Sink()
    yield server
    server.server.shutdown()


@pytest.fixture
def start_detector(tmp_path, free_port):
    """Call it with a version URI (and flags) for a running detector; stopped at the end of the test."""
    started: list[Detector] = []

    def _start(model_uri: str, *args: str, state_dir: Path | None = None, env: dict | None = None) -> Detector:
        detector = Detector(model_uri, free_port(), state_dir or tmp_path / "state", *args, env=env)
        started.append(detector.start())
        return detector

    yield _start
    for detector in started:
        detector.stop()
