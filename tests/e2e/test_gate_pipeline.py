"""End to end: a good run promotes production; a deliberately worse model is then stopped by the gate."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CSV = ["dataset=csv", "dataset.label=malignant", "dataset.entity_column=row_id", "dataset.model_name=breast-cancer-mlp"]


def _write_csvs(tmp_path: Path) -> tuple[Path, Path]:
    """The breast cancer rows as CSV, and a copy whose training rows carry no signal.

    In the copy every feature column is shuffled among the rows prep puts in train and val, while the
    test rows stay as they are (prep splits on the label alone, so the split is the same). A model trained
    on it has learnt nothing; the production model, scored on the same clean test rows, is as good as ever.
    """
    from kfkit.config import compose
    from kfkit.data.prep import prepare
    from kfkit.data.sources import breast_cancer

    frame = breast_cancer(label="malignant")
    frame.insert(0, "row_id", np.arange(len(frame)))
    clean = tmp_path / "clean.csv"
    frame.to_csv(clean, index=False)
    cfg = compose([*CSV, f"dataset.path={clean}"])
    import pandas as pd

    prepare(cfg.dataset, tmp_path / "split")
    test_ids = set(pd.read_parquet(tmp_path / "split" / "test.parquet")["row_id"])
    worse = frame.copy()
    train_rows = ~worse["row_id"].isin(test_ids)
    rng = np.random.default_rng(0)
    for column in worse.columns.drop(["row_id", "malignant"]):
        values = worse.loc[train_rows, column].to_numpy()
        worse.loc[train_rows, column] = rng.permutation(values)
    path = tmp_path / "shuffled.csv"
    worse.to_csv(path, index=False)
    return clean, path


def _run(tmp_path: Path, data: Path, free_port) -> subprocess.CompletedProcess:
    args = [
        sys.executable, "-m", "kfkit.cli", "run", "--no-serve", "--summary-json", str(tmp_path / "summary.json"),
        *CSV, f"dataset.path={data}", "training.nproc=1",
        f"work_dir={tmp_path / 'work'}", f"registry.uri=file://{tmp_path / 'registry'}",
        f"serving.http_port={free_port()}", f"serving.grpc_port={free_port()}",
    ]  # fmt: skip
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)


def test_gate_stops_a_worse_model_after_production_was_promoted(tmp_path, free_port):
    from kfkit.registry import open_registry

    clean, shuffled = _write_csvs(tmp_path)
    good = _run(tmp_path, clean, free_port)
    assert good.returncode == 0, good.stdout[-3000:] + good.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["version"], summary["promoted_to"]) == ("1", "production")
    assert summary["gate"]["passed"] and summary["gate"]["champion"] is None  # first run: absolute checks only
    registry = open_registry(f"file://{tmp_path / 'registry'}")
    assert registry.aliases("breast-cancer-mlp") == {"production": "1"}
    published = json.loads((tmp_path / "registry" / "breast-cancer-mlp" / "1" / "model.json").read_text())
    assert published["threshold"] == summary["threshold"]  # the server labels at the evaluated threshold
    assert "gate      passed" in good.stdout and "(production)" in good.stdout

    worse = _run(tmp_path, shuffled, free_port)
    assert worse.returncode == 3, worse.stdout[-3000:] + worse.stderr[-3000:]
    last = worse.stderr.strip().splitlines()[-1]
    assert last.startswith("kfkit run: error: step gate failed: gate rejected breast-cancer-mlp: ")
    # Not asserted: the 0.8 floor. A model trained on the shuffled rows can still rank clean breast-cancer rows
    # well (measured: ROC-AUC 0.898 on the hash split), as nearly all 30 features rise with malignancy;
    # what must stop it is the comparison with production on the same test rows.
    assert "below production version 1" in last and "on the same test rows" in last
    assert "nothing was published or deployed" in last
    assert "[publish]" not in worse.stdout and "[deploy]" not in worse.stdout
    assert [v.version for v in registry.versions("breast-cancer-mlp")] == ["1"]  # nothing new was published
    assert registry.aliases("breast-cancer-mlp") == {"production": "1"}
    assert [e.action for e in registry.audit("breast-cancer-mlp")] == ["publish", "promote"]
    decisions = sorted((tmp_path / "work" / "pipeline_root").glob("*/gate/decision"), key=lambda p: p.stat().st_mtime)
    rejected = json.loads(decisions[-1].read_text())
    assert rejected["passed"] is False and rejected["champion"]["version"] == "1"
    champion, candidate = rejected["champion"]["metrics"]["roc_auc"], rejected["candidate"]["metrics"]["roc_auc"]
    assert champion > 0.95 and candidate < champion - cfg_max_regression()


def cfg_max_regression() -> float:
    """gate.max_regression of the default config: how far below production a candidate may score."""
    from kfkit.config import compose

    return compose([]).gate.max_regression
