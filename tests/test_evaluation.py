"""Metrics, the operating-threshold rules, calibration, segments and the HTML report."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from kfkit.config import compose
from kfkit.errors import DatasetError
from kfkit.evaluation.metrics import (
    calibration_table,
    compute_metrics,
    evaluate,
    evaluate_model,
    pick_threshold,
    segment_metrics,
)
from kfkit.evaluation.report import write_report


def _noisy(n=500, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)


def test_metrics_match_scikit_learn():
    y, scores = _noisy()
    result = compute_metrics(y, scores, threshold=0.5)
    assert result.metrics["roc_auc"] == pytest.approx(skm.roc_auc_score(y, scores))
    assert result.metrics["pr_auc"] == pytest.approx(skm.average_precision_score(y, scores))
    assert result.metrics["accuracy"] == pytest.approx(skm.accuracy_score(y, scores >= 0.5))
    assert result.metrics["f1"] == pytest.approx(skm.f1_score(y, scores >= 0.5))
    assert result.metrics["brier"] == pytest.approx(skm.brier_score_loss(y, scores))
    (tn, fp), (fn, tp) = result.confusion_matrix
    assert tn + fp + fn + tp == 500
    assert tp == int(((scores >= 0.5) & (y == 1)).sum())
    assert len(result.roc_curve["fpr"]) <= 200
    assert all(0 <= t <= 1 for t in result.roc_curve["thresholds"])


def test_expected_calibration_error_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0, 1, 1])
    scores = np.array([0.05, 0.15, 0.12, 0.55, 0.58, 0.95, 0.91, 1.0])
    table = calibration_table(y, scores, bins=4)
    assert table["rows"] == [3.0, 0.0, 2.0, 3.0]
    # bins [0,.25): 3 rows, mean .1067, 1/3 positive; [.5,.75): mean .565, all positive; [.75,1]: mean .62, 2/3
    expected = 3 / 8 * abs(1 / 3 - 0.32 / 3) + 2 / 8 * abs(1 - 0.565) + 3 / 8 * abs(2 / 3 - 2.86 / 3)
    assert compute_metrics(y, scores, calibration_bins=4).metrics["ece"] == pytest.approx(expected)
    rng = np.random.default_rng(1)
    p = rng.random(20_000)
    calibrated = compute_metrics(rng.random(20_000) < p, p).metrics["ece"]
    overconfident = compute_metrics(rng.random(20_000) < p, np.where(p > 0.5, 1.0, 0.0)).metrics["ece"]
    assert calibrated < 0.02 < 0.2 < overconfident


def _brute_force(y, scores):
    """(threshold, f1, precision, recall) at every distinct score, computed directly."""
    out = []
    for t in np.unique(scores):
        pred = scores >= t
        tp = int((pred & (y == 1)).sum())
        precision, recall = tp / pred.sum(), tp / (y == 1).sum()
        out.append((t, 2 * tp / (pred.sum() + (y == 1).sum()), precision, recall))
    return out


def test_max_f1_threshold_is_the_best_cut_with_the_widest_margin():
    y, scores = _noisy(300, seed=3)
    threshold, note = pick_threshold(y, scores, "max_f1")
    assert note == ""
    best = max(f1 for _, f1, _, _ in _brute_force(y, scores))
    assert skm.f1_score(y, scores >= threshold) == pytest.approx(best)
    below = scores[scores < threshold].max()
    above = scores[scores >= threshold].min()
    assert threshold == pytest.approx((below + above) / 2)
    separable_y = np.array([0, 0, 0, 1, 1])
    assert pick_threshold(separable_y, np.array([0.1, 0.2, 0.3, 0.7, 0.9]), "max_f1")[0] == pytest.approx(0.5)


def test_recall_at_precision_threshold():
    y, scores = _noisy(400, seed=5)
    threshold, note = pick_threshold(y, scores, "recall_at_precision", target_precision=0.8)
    assert note == ""
    assert skm.precision_score(y, scores >= threshold) >= 0.8
    feasible = [r for _, _, p, r in _brute_force(y, scores) if p >= 0.8]
    assert skm.recall_score(y, scores >= threshold) == pytest.approx(max(feasible))
    # Out of reach: the most precise cut, and a note that says so and what to change.
    threshold, note = pick_threshold(np.array([0, 1, 0, 1]), np.array([0.9, 0.8, 0.7, 0.6]), "recall_at_precision",
                                     target_precision=0.99)  # fmt: skip
    assert "no threshold reaches precision 0.99" in note and "evaluation.target_precision" in note


def test_fixed_rule_and_one_class_fallback():
    assert pick_threshold(np.array([0, 1]), np.array([0.2, 0.9]), "fixed", fixed=0.3) == (0.3, "")
    threshold, note = pick_threshold(np.zeros(5), np.linspace(0, 1, 5), "max_f1", fixed=0.4)
    assert threshold == 0.4 and "one class" in note


def test_segments_cut_numeric_columns_into_quartiles():
    y, scores = _noisy(400, seed=7)
    frame = pd.DataFrame({"amount": np.arange(400, dtype=float), "country": ["de", "fr"] * 200})
    out = segment_metrics(frame, y, scores, 0.5, ["amount", "country"])
    assert len(out["amount"]) == 4 and sum(s["rows"] for s in out["amount"]) == 400
    assert out["amount"][0]["segment"] == "[0.0, 99.0]"
    assert {s["segment"] for s in out["country"]} == {"de", "fr"}
    mask = frame["country"] == "de"
    de = next(s for s in out["country"] if s["segment"] == "de")
    assert de["roc_auc"] == pytest.approx(skm.roc_auc_score(y[mask], scores[mask]), abs=1e-6)
    with pytest.raises(DatasetError, match="'merchant'.*dataset.entity_column"):
        segment_metrics(frame, y, scores, 0.5, ["merchant"])


def test_report_has_plots_metrics_and_segments(tmp_path):
    y = np.array([0, 0, 1, 1, 0, 1])
    result = compute_metrics(y, np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9]))
    result.segments = {
        "mean_radius": [
            {
                "segment": "[1, 2]",
                "rows": 6,
                "positives": 3,
                "accuracy": 0.5,
                "roc_auc": None,
                "pr_auc": 1.0,
                "f1": 0.5,
                "precision": 0.5,
                "recall": 0.5,
            }
        ]
    }
    write_report(result, tmp_path, title="demo <model>")
    for name in ("roc.png", "pr.png", "calibration.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    assert "demo &lt;model&gt;" in page
    assert page.count("data:image/png;base64,") == 3
    assert f"{result.metrics['roc_auc']:.4f}" in page
    assert "Expected calibration error" in page and "<h3>mean_radius</h3>" in page


def test_trained_model_scores_well_on_breast_cancer(trained_breast_cancer):
    result = evaluate_model(trained_breast_cancer["model"], trained_breast_cancer["prepared"] / "test.parquet")
    assert result.metrics["rows"] == 113  # 569 rows, test_fraction 0.2, stratified at exact counts
    assert result.metrics["accuracy"] >= 0.93
    assert result.metrics["roc_auc"] >= 0.97


def test_evaluate_picks_the_threshold_on_validation_rows(trained_breast_cancer):
    cfg = compose(["evaluation.segments=[mean_radius]"]).evaluation
    result = evaluate(trained_breast_cancer["model"], trained_breast_cancer["prepared"], cfg)
    assert result.threshold_rule == "max_f1"
    val = pd.read_parquet(trained_breast_cancer["prepared"] / "val.parquet")
    from kfkit.model import load_scorer

    score, spec = load_scorer(trained_breast_cancer["model"])
    expected, _ = pick_threshold(val[spec.label], score(val[spec.feature_names].to_numpy("float32")), "max_f1")
    assert result.threshold == pytest.approx(expected)
    assert result.validation["f1"] >= 0.9
    assert result.metrics["roc_auc"] >= 0.97 and 0 <= result.metrics["ece"] < 0.2
    assert sum(s["rows"] for s in result.segments["mean_radius"]) == result.metrics["rows"]
    assert len(result.test_sha256) == 64
    fixed = evaluate(trained_breast_cancer["model"], trained_breast_cancer["prepared"],
                     replace(cfg, threshold_rule="fixed", threshold=0.3))  # fmt: skip
    assert fixed.threshold == 0.3
