"""Shared fixtures: composed configs, free ports, a trained tiny model; in CI, a missing tool fails its test."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from kfkit.config import KfkitConfig, compose
from kfkit.deploy.local import free_port as _free_port

MISSING_TOOL = "missing tool:"
"""Prefix of a skip reason that means a tool (helm, checkov, the CRD schemas, ss, wrk ...) is not there.

On a laptop such a test skips and says what to install; with CI=true it fails instead, so a CI run
without the tool cannot pass the test by not running it."""


def in_ci() -> bool:
    """True where the CI environment variable says so (``.ci/run`` runs with CI=true)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (report.skipped and in_ci() and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    if reason.startswith(MISSING_TOOL):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: {reason} (CI=true: a missing tool fails the test instead of skipping it)"


@pytest.fixture
def repo() -> Path:
    """The repository root."""
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def free_port():
    """Call it for a TCP port nothing listens on right now."""
    return _free_port


@pytest.fixture
def make_config(tmp_path: Path):
    """Compose a config with overrides, its work dir and registry under tmp_path."""

    def _make(*overrides: str) -> KfkitConfig:
        cfg = compose([f"work_dir={tmp_path / 'work'}", f"registry.uri=file://{tmp_path / 'registry'}", *overrides])
        return replace(cfg, serving=replace(cfg.serving, http_port=_free_port(), grpc_port=_free_port()))

    return _make


@pytest.fixture(scope="session")
def trained_breast_cancer(tmp_path_factory) -> dict[str, Path]:
    """Prepared splits and a model trained for a few epochs with one process (shared by tests)."""
    from kfkit.data.prep import prepare
    from kfkit.training.launcher import train

    root = tmp_path_factory.mktemp("bc")
    cfg = compose(["training.epochs=20", "training.nproc=1"])
    prepare(cfg.dataset, root / "prepared")
    train(root / "prepared", cfg, root / "model")
    return {"prepared": root / "prepared", "model": root / "model", "root": root}
