"""Fixtures for the PyTorch training tests: prepared splits, and the DDP worker run in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kfkit.config import compose, to_dict


@pytest.fixture(scope="session")
def bc_prepared(tmp_path_factory) -> Path:
    """Breast cancer splits (455/85/114... rows), prepared once per session."""
    from kfkit.data.prep import prepare

    out = tmp_path_factory.mktemp("bc-prepared")
    prepare(compose([]).dataset, out)
    return out


@pytest.fixture(scope="session")
def fraud_prepared(tmp_path_factory) -> Path:
    """10,000 synthetic fraud rows (6,500 training rows), prepared once per session."""
    from kfkit.data.prep import prepare

    out = tmp_path_factory.mktemp("fraud-prepared")
    prepare(compose(["dataset=synthetic_fraud", "dataset.n_rows=10000"]).dataset, out)
    return out


@pytest.fixture
def run_worker(tmp_path: Path):
    """Run the worker in this process as a single rank (no torchrun): fast, for single-process behaviour.

    Returns ``(exit status, training summary or None)``.
    """
    from kfkit.training.outputs import TRAINING_SUMMARY_FILE
    from kfkit.training.worker import main

    def _run(prepared: Path, out: Path, *overrides: str) -> tuple[int, dict | None]:
        config = tmp_path / f"{out.name}.config.json"
        config.write_text(json.dumps(to_dict(compose(["training.nproc=1", *overrides]))))
        status = main(["--prepared", str(prepared), "--config", str(config), "--out", str(out)])
        summary = out / TRAINING_SUMMARY_FILE
        return status, (json.loads(summary.read_text()) if summary.is_file() else None)

    return _run
