"""Shared fixtures: composed configs, free ports, a trained tiny model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kfkit.config import KfkitConfig, compose
from kfkit.deploy.local import free_port as _free_port


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
