"""The drift report a person reads: one self-contained HTML page per drifted window, plots embedded as PNGs.

The page holds the window's time span and row count, the deciding test's result, a table of every
feature's statistics (K-S or chi-square p-value and statistic, PSI and its band), and reference vs window
histograms of the drifted features (and of the predicted probability when the output drifted).
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report", "REPORT_NAME"]

REPORT_NAME = "w{index}.html"
_MAX_PLOTS = 12


def write_report(
    folder: Path,
    *,
    window: Any,
    result: dict[str, Any],
    reference: np.ndarray,
    reference_probabilities: np.ndarray | None,
    feature_names: list[str],
    title: str,
) -> Path:
    """Write ``w<index>.html`` into ``folder`` and return its path.

    Args:
        folder: Reports folder.
        window: The :class:`~kfkit.serving.drift.windows.ClosedWindow` tested.
        result: The window's result (:meth:`kfkit.serving.drift.worker.TestWorker.test` output).
        reference: Reference rows.
        reference_probabilities: Reference predictions, if any.
        feature_names: Feature names in column order.
        title: Model and version, for the heading.
    """
    stats = result["statistics"]
    drifted = result["drifted_features"] or _most_shifted(stats)
    plots = [
        _plot(name, reference[:, feature_names.index(name)], window.rows[:, feature_names.index(name)])
        for name in drifted[:_MAX_PLOTS]
    ]
    output = result.get("output") or {}
    if output.get("is_drift") and reference_probabilities is not None and window.probabilities.size:
        plots.append(_plot("predicted probability", reference_probabilities, window.probabilities))
    rows = "\n".join(
        "<tr{cls}><td>{name}</td><td>{p}</td><td>{d}</td><td>{psi}</td><td>{band}</td><td>{flag}</td></tr>".format(
            cls=' class="drift"' if s["drifted"] else "",
            name=html.escape(s["feature"]),
            p=_fmt(s["p_val"]),
            d=_fmt(s["distance"]),
            psi=_fmt(s["psi"]),
            band=_band(s["psi"]),
            flag="drift" if s["drifted"] else "",
        )
        for s in stats
    )
    data = result["result"]["data"]
    page = _PAGE.format(
        title=html.escape(title),
        index=window.index,
        start=_time(window.start),
        end=_time(window.end),
        rows=window.rows.shape[0],
        outputs=window.probabilities.size,
        detector=html.escape(result["result"]["meta"].get("name", "")),
        is_drift="yes" if result["is_drift"] else "no",
        feature_drift="yes" if result["feature_drift"] else "no",
        output_drift=html.escape(_output_line(output)),
        p_val=html.escape(_short(data.get("p_val"))),
        threshold=html.escape(_short(data.get("threshold"))),
        distance=html.escape(_short(data.get("distance"))),
        drifted=html.escape(", ".join(result["drifted_features"]) or "none named by the test"),
        table=rows,
        plots="\n".join(plots) or "<p>No plots.</p>",
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_NAME.format(index=window.index)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _plot(name: str, reference: np.ndarray, current: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.2, 2.8), dpi=90)
    axes = figure.subplots()
    both = np.concatenate([reference, current])
    low, high = np.quantile(both, [0.005, 0.995]) if both.size else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 31)
    axes.hist(np.clip(reference, bins[0], bins[-1]), bins=bins, density=True, alpha=0.55, label="reference")
    axes.hist(np.clip(current, bins[0], bins[-1]), bins=bins, density=True, alpha=0.55, label="window")
    axes.set_title(name, fontsize=10)
    axes.legend(fontsize=8)
    axes.tick_params(labelsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    caption = (
        f"{html.escape(name)}: reference mean {np.mean(reference):.4g} (sd {np.std(reference):.4g}), "
        f"window mean {np.mean(current):.4g} (sd {np.std(current):.4g})"
    )
    image = f'<img alt="{html.escape(name)}" src="data:image/png;base64,{encoded}">'
    return f"<figure>{image}<figcaption>{caption}</figcaption></figure>"


def _most_shifted(stats: list[dict[str, Any]], n: int = 3) -> list[str]:
    """For a multivariate test that names no feature: the features with the largest K-S statistics."""
    ranked = sorted((s for s in stats if s["distance"] is not None), key=lambda s: -s["distance"])
    return [s["feature"] for s in ranked[:n]]


def _output_line(output: dict[str, Any]) -> str:
    if not output:
        return "not tested"
    if output.get("skipped"):
        return f"not tested: {output['skipped']}"
    return f"{'yes' if output['is_drift'] else 'no'} (p-value or PSI {_short(output.get('p_val'))})"


def _band(value: float | None) -> str:
    if value is None:
        return ""
    return "major" if value >= 0.25 else "moderate" if value >= 0.1 else "stable"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


def _short(value: Any) -> str:
    if isinstance(value, list):
        return f"min {min(value):.4g} over {len(value)} features" if value else "[]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


def _time(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report: {title}, window {index}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.drift {{ background: #fde2e2; font-weight: bold; }}
figure {{ display: inline-block; margin: 0.5em; }}
figcaption {{ font-size: 0.8em; max-width: 470px; }}
dt {{ font-weight: bold; }}
</style></head>
<body>
<h1>Drift report: {title}, window {index}</h1>
<dl>
<dt>Time span</dt><dd>{start} to {end}</dd>
<dt>Rows</dt><dd>{rows} request rows, {outputs} logged predictions</dd>
<dt>Deciding test</dt><dd>{detector}: p-value {p_val}, threshold {threshold}, distance {distance}</dd>
<dt>Drift</dt><dd>{is_drift} (features: {feature_drift}; output: {output_drift})</dd>
<dt>Drifted features</dt><dd>{drifted}</dd>
</dl>
<h2>Reference vs window</h2>
{plots}
<h2>Every feature</h2>
<p>p-value and statistic: Kolmogorov-Smirnov (chi-square for categorical features), before correction.
PSI bands: below 0.1 stable, 0.1-0.25 moderate, 0.25 and above major.</p>
<table><tr><th>feature</th><th>p-value</th><th>statistic</th><th>PSI</th><th>PSI band</th><th></th></tr>
{table}
</table>
</body></html>
"""
