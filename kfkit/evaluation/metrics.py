"""Score a trained model: operating threshold from validation, test metrics, calibration, segments."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import DatasetError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kfkit.config import EvaluationConfig

__all__ = [
    "Evaluation",
    "evaluate",
    "evaluate_model",
    "compute_metrics",
    "pick_threshold",
    "calibration_table",
    "segment_metrics",
    "METRICS_FILE",
    "HIGHER_IS_BETTER",
    "LOWER_IS_BETTER",
]

METRICS_FILE = "metrics.json"
HIGHER_IS_BETTER = ("accuracy", "roc_auc", "pr_auc", "f1", "precision", "recall")
"""Test metrics where more is better (what the gate may floor and compare)."""
LOWER_IS_BETTER = ("ece", "brier")
"""Test metrics where less is better: expected calibration error and Brier score."""


@dataclass
class Evaluation:
    """Test-set results of one model at its operating threshold."""

    metrics: dict[str, float]
    """accuracy, roc_auc, pr_auc, f1, precision, recall (at ``threshold``), ece, brier, positive_rate, rows."""
    threshold: float
    """Operating threshold: a row is labelled 1 when its probability is at least this."""
    confusion_matrix: list[list[int]]
    """[[tn, fp], [fn, tp]]: rows are true labels 0/1, columns predicted."""
    roc_curve: dict[str, list[float]] = field(default_factory=dict)
    """fpr, tpr, thresholds (downsampled to at most 200 points)."""
    pr_curve: dict[str, list[float]] = field(default_factory=dict)
    """precision, recall."""
    calibration: dict[str, list[float]] = field(default_factory=dict)
    """Reliability diagram: per probability bin its lower/upper edge, rows, mean predicted, fraction positive."""
    threshold_rule: str = "fixed"
    """How ``threshold`` was chosen: fixed, max_f1 or recall_at_precision (on the validation split)."""
    threshold_note: str = ""
    """Why the rule could not be applied as asked, if it could not (e.g. the target precision is out of reach)."""
    validation: dict[str, float] = field(default_factory=dict)
    """Validation-split precision, recall and F1 at ``threshold`` (what the rule saw)."""
    segments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per configured column: one row of metrics per segment (quartile bin or value)."""
    test_sha256: str = ""
    """sha256 of the scored test file: the gate scores the champion on exactly these rows."""


def compute_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5, *, calibration_bins: int = 10
) -> Evaluation:
    """Metrics of positive-class ``scores`` against 0/1 ``y_true``, labels cut at ``threshold``."""
    import numpy as np
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    y_pred = (scores >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    fpr, tpr, roc_thr = skm.roc_curve(y_true, scores) if both_classes else (np.array([0, 1]),) * 2 + (np.array([1, 0]),)
    if both_classes:
        precision, recall, _ = skm.precision_recall_curve(y_true, scores)
    else:  # e.g. a segment without positives: no curve to draw
        precision, recall = np.array([1.0]), np.array([0.0])
    calibration = calibration_table(y_true, scores, calibration_bins)
    result = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "roc_auc": skm.roc_auc_score(y_true, scores) if both_classes else float("nan"),
        "pr_auc": min(1.0, skm.average_precision_score(y_true, scores)) if both_classes else float("nan"),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0),
        "ece": _expected_calibration_error(calibration, len(y_true)),
        "brier": float(np.mean((scores - y_true) ** 2)),
        "positive_rate": float(y_true.mean()),
        "rows": float(len(y_true)),
    }
    keep = _downsample(len(fpr), 200)
    keep_pr = _downsample(len(precision), 200)
    return Evaluation(
        metrics={k: float(v) for k, v in result.items()},
        threshold=float(threshold),
        confusion_matrix=skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        roc_curve={
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            # roc_curve's first threshold is +inf; kfp's ClassificationMetrics wants finite numbers.
            "thresholds": np.clip(roc_thr[keep], 0.0, 1.0).tolist(),
        },
        pr_curve={"precision": precision[keep_pr].tolist(), "recall": recall[keep_pr].tolist()},
        calibration=calibration,
    )


def calibration_table(y_true: np.ndarray, scores: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    """Equal-width probability bins: edges, rows, mean predicted probability and observed positive rate.

    Empty bins have 0 rows and NaN means (they are skipped by the error and the plot).
    """
    import numpy as np

    y_true = np.asarray(y_true, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    index = np.minimum((scores * bins).astype(int), bins - 1)  # a probability of exactly 1 goes to the top bin
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        predicted = np.bincount(index, weights=scores, minlength=bins) / counts
        observed = np.bincount(index, weights=y_true, minlength=bins) / counts
    return {
        "lower": [i / bins for i in range(bins)],
        "upper": [(i + 1) / bins for i in range(bins)],
        "rows": counts.astype(float).tolist(),
        "mean_predicted": predicted.tolist(),
        "fraction_positive": observed.tolist(),
    }


def _expected_calibration_error(calibration: dict[str, list[float]], n: int) -> float:
    """Sum over bins of (bin rows / all rows) x |observed positive rate - mean predicted probability|."""
    total = 0.0
    for rows, predicted, observed in zip(
        calibration["rows"], calibration["mean_predicted"], calibration["fraction_positive"], strict=True
    ):
        if rows:
            total += rows / n * abs(observed - predicted)
    return total


def pick_threshold(
    y_true: np.ndarray, scores: np.ndarray, rule: str, *, fixed: float = 0.5, target_precision: float = 0.9
) -> tuple[float, str]:
    """The operating threshold ``rule`` picks on validation labels and scores, and a note if it fell back.

    The threshold sits halfway between the lowest score labelled 1 and the next lower score, so the
    validation labels are exactly those the rule chose, with the widest margin on either side.

    Args:
        y_true: Validation labels (0/1).
        scores: Validation probabilities.
        rule: fixed (use ``fixed``), max_f1, or recall_at_precision (highest recall whose precision is at
            least ``target_precision``; if none reaches it, the most precise cut, with a note).
        fixed: The threshold for rule=fixed, and the fallback when the split has one class.
        target_precision: For recall_at_precision.

    Returns:
        (threshold, note); the note is empty unless the rule could not be applied as asked.
    """
    import numpy as np

    if rule == "fixed":
        return float(fixed), ""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(scores, dtype=np.float64)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        return float(fixed), f"the validation split has one class; kept evaluation.threshold={fixed}"
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Cut after the last of each run of equal scores: predicting the top k rows positive.
    ends = np.flatnonzero(np.append(s_sorted[:-1] != s_sorted[1:], True))
    k = ends + 1
    tp = np.cumsum(y_sorted)[ends]
    precision = tp / k
    recall = tp / positives
    f1 = 2 * tp / (k + positives)
    note = ""
    if rule == "max_f1":
        best = np.flatnonzero(f1 == f1.max())
    elif rule == "recall_at_precision":
        reachable = np.flatnonzero(precision >= target_precision)
        if len(reachable):
            best = reachable[recall[reachable] == recall[reachable].max()][:1]  # fewest positives among ties
        else:
            best = np.flatnonzero(precision == precision.max())[-1:]
            note = (
                f"no threshold reaches precision {target_precision} on the validation split (best "
                f"{precision.max():.3f}); used the most precise cut. Lower evaluation.target_precision or collect "
                "more data"
            )
    else:
        raise ValueError(f"unknown threshold rule {rule!r}")
    choice = best[len(best) // 2]  # ties: the middle of the tied cuts
    upper = s_sorted[ends[choice]]
    lower = s_sorted[ends[choice] + 1] if ends[choice] + 1 < len(s_sorted) else 0.0
    return float(np.clip((upper + lower) / 2, 1e-6, 1 - 1e-6)), note


def segment_metrics(
    frame: pd.DataFrame, y_true: np.ndarray, scores: np.ndarray, threshold: float, columns: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Test metrics per segment of each column: numeric and time columns by quartile, others by value.

    Raises:
        DatasetError: a column is not in the scored data.
    """
    import numpy as np
    import pandas as pd

    out: dict[str, list[dict[str, Any]]] = {}
    for column in columns:
        if column not in frame.columns:
            raise DatasetError(
                f"evaluation.segments names {column!r}, which the test split does not have; it has "
                f"{list(frame.columns)[:40]}; segment by features, the label, or dataset.entity_column / "
                "dataset.timestamp_column"
            )
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values)
        if numeric and values.nunique() > 4:
            groups = pd.qcut(values, q=4, duplicates="drop")  # ties stay together: maybe fewer than 4 bins
            keys = groups.map(
                {b: f"[{values[groups == b].min()}, {values[groups == b].max()}]" for b in groups.cat.categories}
            ).astype(str)
        else:  # few distinct values, or text: one segment per value (the 10 commonest, then "(other)")
            text = values.astype(str)
            top = text.value_counts().index[:10]
            keys = text.where(text.isin(top), "(other)")
        rows = []
        for key in pd.unique(keys):
            mask = (keys == key).to_numpy()
            part = compute_metrics(y_true[mask], scores[mask], threshold)
            m = part.metrics
            rows.append(
                {
                    "segment": str(key),
                    "rows": int(mask.sum()),
                    "positives": int(np.asarray(y_true)[mask].sum()),
                    **{k: (None if math.isnan(m[k]) else round(m[k], 6)) for k in HIGHER_IS_BETTER},
                }  # fmt: skip
            )
        out[column] = rows
    return out


def evaluate(model_dir: str | Path, prepared_dir: str | Path, cfg: EvaluationConfig) -> Evaluation:
    """Pick the operating threshold on the validation split, then measure the test split.

    Scores through :func:`kfkit.model.load_scorer`, so PyTorch and TensorFlow models are measured alike.

    Raises:
        DatasetError: a split or a segment column is missing.
        ModelLoadError: the model cannot be loaded.
    """
    import pandas as pd

    from kfkit.model import load_scorer
    from kfkit.registry import sha256_file

    prepared = Path(prepared_dir)
    for split in ("val", "test"):
        if not (prepared / f"{split}.parquet").is_file():
            raise DatasetError(f"{prepared / f'{split}.parquet'} is missing: is {prepared} the output of prep?")
    score, spec = load_scorer(model_dir)
    val = pd.read_parquet(prepared / "val.parquet")
    val_scores = score(val[spec.feature_names].to_numpy(dtype="float32"))
    val_y = val[spec.label].to_numpy()
    threshold, note = pick_threshold(val_y, val_scores, cfg.threshold_rule, fixed=cfg.threshold,
                                     target_precision=cfg.target_precision)  # fmt: skip
    test = pd.read_parquet(prepared / "test.parquet")
    scores = score(test[spec.feature_names].to_numpy(dtype="float32"))
    y = test[spec.label].to_numpy()
    result = compute_metrics(y, scores, threshold, calibration_bins=cfg.calibration_bins)
    on_val = compute_metrics(val_y, val_scores, threshold).metrics
    result.threshold_rule = cfg.threshold_rule
    result.threshold_note = note
    result.validation = {k: on_val[k] for k in ("precision", "recall", "f1", "rows")}
    result.segments = segment_metrics(test, y, scores, threshold, list(cfg.segments))
    result.test_sha256 = sha256_file(prepared / "test.parquet")
    return result


def evaluate_model(model_dir: str | Path, test_path: str | Path, threshold: float | None = None) -> Evaluation:
    """Score a saved model on one Parquet split at a given threshold (the model's own by default)."""
    import pandas as pd

    from kfkit.model import load_scorer

    score, spec = load_scorer(model_dir)
    frame = pd.read_parquet(test_path)
    scores = score(frame[spec.feature_names].to_numpy(dtype="float32"))
    return compute_metrics(frame[spec.label].to_numpy(), scores, spec.threshold if threshold is None else threshold)


def _downsample(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    step = (n - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)})
