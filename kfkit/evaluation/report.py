"""The evaluation report: metrics.json, ROC / PR / calibration plots and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kfkit.evaluation.metrics import HIGHER_IS_BETTER, METRICS_FILE, Evaluation

__all__ = ["write_report", "render_html"]


def write_report(evaluation: Evaluation, out_dir: str | Path, *, title: str) -> Path:
    """Write metrics.json, roc.png, pr.png, calibration.png and report.html (self-contained) into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS_FILE).write_text(json.dumps(asdict(evaluation), indent=2) + "\n")
    pngs = _plot(evaluation)
    for name, data in pngs.items():
        (out / f"{name}.png").write_bytes(data)
    (out / "report.html").write_text(render_html(evaluation, pngs, title=title))
    return out


def render_html(evaluation: Evaluation, pngs: dict[str, bytes], *, title: str) -> str:
    """A one-page report with embedded images, as the Kubeflow Pipelines UI shows an HTML artifact."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.4f}</td></tr>" for k, v in evaluation.metrics.items() if k != "rows")
    (tn, fp), (fn, tp) = evaluation.confusion_matrix
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode()}" width="400">'
        for name, data in pngs.items()
    )
    rule = {"fixed": "fixed in the config", "max_f1": "maximum F1 on the validation split",
            "recall_at_precision": "highest recall at the target precision on the validation split"}.get(
        evaluation.threshold_rule, evaluation.threshold_rule)  # fmt: skip
    note = f'<p class="note">{e(evaluation.threshold_note)}</p>' if evaluation.threshold_note else ""
    segments = ""
    for column, parts in evaluation.segments.items():
        head = "".join(f"<th>{e(k)}</th>" for k in ("segment", "rows", "positives", *HIGHER_IS_BETTER))
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(p[k])}</td>" for k in ("segment", "rows", "positives", *HIGHER_IS_BETTER))
            + "</tr>" for p in parts
        )  # fmt: skip
        segments += f"<h3>{e(column)}</h3><table><tr>{head}</tr>{body}</table>"
    if segments:
        segments = f"<h2>Segments</h2>{segments}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}.note{{color:#a60}}</style></head>
<body><h1>{e(title)}</h1>
<p>{int(evaluation.metrics["rows"])} test rows. Operating threshold <b>{evaluation.threshold:.6g}</b>
({e(rule)}).</p>{note}
<table><tr><th>metric</th><th>value</th></tr>{rows}</table>
<h2>Confusion matrix</h2>
<table><tr><th></th><th>predicted 0</th><th>predicted 1</th></tr>
<tr><th>true 0</th><td>{tn}</td><td>{fp}</td></tr><tr><th>true 1</th><td>{fn}</td><td>{tp}</td></tr></table>
<h2>Curves and calibration</h2>
<p>Expected calibration error {evaluation.metrics.get("ece", float("nan")):.4f}
over {len(evaluation.calibration.get("rows", []))} probability bins.</p>{images}
{segments}
</body></html>
"""


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def _plot(evaluation: Evaluation) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in pods
    import matplotlib.pyplot as plt

    m = evaluation.metrics
    cal = evaluation.calibration
    kept = [i for i, n in enumerate(cal.get("rows", [])) if n]
    panels = {
        "roc": (evaluation.roc_curve["fpr"], evaluation.roc_curve["tpr"], "false positive rate", "true positive rate",
                f"ROC-AUC {m['roc_auc']:.4f}"),
        "pr": (evaluation.pr_curve["recall"], evaluation.pr_curve["precision"], "recall", "precision",
               f"PR-AUC {m['pr_auc']:.4f}"),
        "calibration": ([cal["mean_predicted"][i] for i in kept], [cal["fraction_positive"][i] for i in kept],
                        "mean predicted probability", "fraction positive", f"ECE {m.get('ece', float('nan')):.4f}"),
    }  # fmt: skip
    out: dict[str, bytes] = {}
    for name, (xs, ys, xlabel, ylabel, label) in panels.items():
        fig, ax = plt.subplots(figsize=(4.2, 4.0), dpi=100)
        ax.plot(xs, ys, lw=2, label=label, marker="o" if name == "calibration" else None)
        if name == "pr":
            ax.axhline(m["positive_rate"], ls="--", c="grey", lw=1, label="chance")
        else:
            ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="chance" if name == "roc" else "perfect")
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=name.upper())
        ax.legend(loc="lower left" if name == "pr" else "lower right")
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out
