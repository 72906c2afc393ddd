"""Score a trained model on the test split: metrics, ROC/PR curves, plots and an HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Evaluation", "evaluate_model", "compute_metrics", "write_report"]


@dataclass
class Evaluation:
    """Test-set results of one model."""

    metrics: dict[str, float]
    """accuracy, roc_auc, pr_auc, f1, precision, recall, positive_rate, rows."""
    threshold: float
    confusion_matrix: list[list[int]]
    """[[tn, fp], [fn, tp]]: rows are true labels 0/1, columns predicted."""
    roc_curve: dict[str, list[float]] = field(default_factory=dict)
    """fpr, tpr, thresholds (downsampled to at most 200 points)."""
    pr_curve: dict[str, list[float]] = field(default_factory=dict)
    """precision, recall."""


def compute_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> Evaluation:
    """Metrics of positive-class ``scores`` against 0/1 ``y_true``, labels cut at ``threshold``."""
    import numpy as np
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    y_pred = (scores >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    fpr, tpr, roc_thr = skm.roc_curve(y_true, scores) if both_classes else (np.array([0, 1]),) * 2 + (np.array([1, 0]),)
    precision, recall, _ = skm.precision_recall_curve(y_true, scores)
    result = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "roc_auc": skm.roc_auc_score(y_true, scores) if both_classes else float("nan"),
        "pr_auc": min(1.0, skm.average_precision_score(y_true, scores)) if both_classes else float("nan"),
        "f1": skm.f1_score(y_true, y_pred, zero_division=0),
        "precision": skm.precision_score(y_true, y_pred, zero_division=0),
        "recall": skm.recall_score(y_true, y_pred, zero_division=0),
        "positive_rate": float(y_true.mean()),
        "rows": float(len(y_true)),
    }
    keep = _downsample(len(fpr), 200)
    keep_pr = _downsample(len(precision), 200)
    return Evaluation(
        metrics={k: float(v) for k, v in result.items()},
        threshold=threshold,
        confusion_matrix=skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        roc_curve={
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            # roc_curve's first threshold is +inf; kfp's ClassificationMetrics wants finite numbers.
            "thresholds": np.clip(roc_thr[keep], 0.0, 1.0).tolist(),
        },
        pr_curve={"precision": precision[keep_pr].tolist(), "recall": recall[keep_pr].tolist()},
    )


def evaluate_model(model_dir: str | Path, test_path: str | Path, threshold: float | None = None) -> Evaluation:
    """Load a saved model and score it on a Parquet split (the model's own threshold by default)."""
    import pandas as pd

    from kfkit.model import load_model, predict_proba

    model, spec = load_model(model_dir)
    frame = pd.read_parquet(test_path)
    scores = predict_proba(model, frame[spec.feature_names].to_numpy(dtype="float32"))
    return compute_metrics(frame[spec.label].to_numpy(), scores, spec.threshold if threshold is None else threshold)


def write_report(evaluation: Evaluation, out_dir: str | Path, *, title: str) -> Path:
    """Write metrics.json, roc.png, pr.png and report.html (self-contained) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(asdict(evaluation), indent=2) + "\n")
    pngs = _plot_curves(evaluation)
    for name, data in pngs.items():
        (out / f"{name}.png").write_bytes(data)
    (out / "report.html").write_text(render_html(evaluation, pngs, title=title))
    return out


def render_html(evaluation: Evaluation, pngs: dict[str, bytes], *, title: str) -> str:
    """A one-page report with embedded images, as the Kubeflow Pipelines UI shows an HTML artifact."""
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in evaluation.metrics.items() if k != "rows"
    )
    (tn, fp), (fn, tp) = evaluation.confusion_matrix
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}" width="420">'
        for name, data in pngs.items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{int(evaluation.metrics["rows"])} test rows, threshold {evaluation.threshold:g}.</p>
<table><tr><th>metric</th><th>value</th></tr>{rows}</table>
<h2>Confusion matrix</h2>
<table><tr><th></th><th>predicted 0</th><th>predicted 1</th></tr>
<tr><th>true 0</th><td>{tn}</td><td>{fp}</td></tr><tr><th>true 1</th><td>{fn}</td><td>{tp}</td></tr></table>
<h2>Curves</h2>{images}
</body></html>
"""


def _plot_curves(evaluation: Evaluation) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in pods
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    m = evaluation.metrics
    for name, (xs, ys, xlabel, ylabel, label) in {
        "roc": (evaluation.roc_curve["fpr"], evaluation.roc_curve["tpr"], "false positive rate", "true positive rate",
                f"ROC-AUC {m['roc_auc']:.4f}"),
        "pr": (evaluation.pr_curve["recall"], evaluation.pr_curve["precision"], "recall", "precision",
               f"PR-AUC {m['pr_auc']:.4f}"),
    }.items():  # fmt: skip
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
        ax.plot(xs, ys, lw=2, label=label)
        if name == "roc":
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance")
        else:
            ax.axhline(m["positive_rate"], ls="--", c="grey", lw=1, label="chance")
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=name.upper())
        ax.legend(loc="lower right" if name == "roc" else "lower left")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out


def _downsample(n: int, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    step = (n - 1) / (limit - 1)
    return sorted({round(i * step) for i in range(limit)})
