"""Metrics and the HTML report."""

import numpy as np
import pytest
from sklearn import metrics as skm

from kfkit.evaluation import compute_metrics, evaluate_model, write_report


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    scores = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    result = compute_metrics(y, scores, threshold=0.5)
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores))
    assert result.metrics["pr_auc"] == pytest.approx(skm.average_precision_score(y, scores))
    assert result.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, scores >= 0.5))
    assert result.metrics["f1"] == pytest.approx(skm.f1_score(y, scores >= 0.5))
    (tn, fp), (fn, tp) = result.confusion_matrix
    assert tn + fp + fn + tp == 500
    assert tp == int(((scores >= 0.5) & (y == 1)).sum())
    assert len(result.roc_curve["fpr"]) <= 200
    assert all(0 <= t <= 1 for t in result.roc_curve["thresholds"])


def test_report_has_plots_and_metrics(tmp_path):
    y = np.array([0, 0, 1, 1, 0, 1])
    result = compute_metrics(y, np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9]))
    write_report(result, tmp_path, title="demo <model>")
    for name in ("roc.png", "pr.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert "demo &lt;model&gt;" in page
    assert page.count("data:image/png;base64,") == 2
    assert f"{result.metrics['roc_auc']:.4f}" in page


def test_trained_model_scores_well_on_breast_cancer(trained_breast_cancer):
    result = evaluate_model(trained_breast_cancer["model"], trained_breast_cancer["prepared"] / "test.parquet")
    assert result.metrics["rows"] == 114 or result.metrics["rows"] == 115
    assert result.metrics["accuracy"] >= 0.93
    assert result.metrics["roc_auc"] >= 0.97
