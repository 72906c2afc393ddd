"""Assemble what a registry version holds: model, metrics, drift reference, schema and a model card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit import __version__

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig
    from kfkit.registry import ModelVersion

__all__ = ["assemble", "publish_release", "REFERENCE_FILE", "MODEL_CARD_FILE"]

REFERENCE_FILE = "reference.parquet"
MODEL_CARD_FILE = "README.md"


def assemble(
    cfg: KfkitConfig,
    *,
    model_dir: str | Path,
    prepared_dir: str | Path,
    evaluation_dir: str | Path,
    out_dir: str | Path,
    run_id: str = "",
) -> Path:
    """Gather one release into ``out_dir``.

    The folder holds model.safetensors, model.json, training.json (from training), metrics.json
    (test-set evaluation), schema.json and stats.json (from prep), reference.parquet (training rows
    the drift detector compares live traffic against) and README.md (the model card).
    """
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for file in Path(model_dir).iterdir():
        if file.is_file():
            shutil.copy2(file, out / file.name)
    shutil.copy2(Path(evaluation_dir) / "metrics.json", out / "metrics.json")
    for name in ("schema.json", "stats.json"):
        shutil.copy2(Path(prepared_dir) / name, out / name)
    schema = json.loads((Path(prepared_dir) / "schema.json").read_text())
    train = pd.read_parquet(Path(prepared_dir) / "train.parquet", columns=schema["feature_names"])
    reference = train.sample(n=min(cfg.drift.reference_rows, len(train)), random_state=cfg.dataset.seed)
    reference.reset_index(drop=True).to_parquet(out / REFERENCE_FILE, index=False)
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    (out / MODEL_CARD_FILE).write_text(_model_card(cfg, schema, metrics, run_id))
    return out


def publish_release(cfg: KfkitConfig, release_dir: str | Path, *, run_id: str = "") -> ModelVersion:
    """Publish an assembled release to ``cfg.registry.uri`` as the next version of ``cfg.model.name``."""
    from kfkit.registry import publish

    metrics = json.loads((Path(release_dir) / "metrics.json").read_text())["metrics"]
    metadata = {"metrics": metrics, "dataset": cfg.dataset.kind, "kfkit_version": __version__, "run_id": run_id}
    return publish(release_dir, registry_uri=cfg.registry.uri, name=cfg.model.name, metadata=metadata)


def _model_card(cfg: KfkitConfig, schema: dict, metrics: dict, run_id: str) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if k != "rows")
    splits = ", ".join(f"{k} {v} rows ({schema['positives'][k]} positive)" for k, v in schema["rows"].items())
    return f"""# Model card: {cfg.model.name}

- **Task**: binary classification of `{schema["label"]}` (1 = positive)
  from {len(schema["feature_names"])} numeric features.
- **Data**: `{cfg.dataset.kind}`{f" ({cfg.dataset.path})" if cfg.dataset.path else ""}; {splits}.
- **Model**: {cfg.model.framework} MLP, hidden layers {list(cfg.model.hidden_dims)}, dropout {cfg.model.dropout};
  inputs are standardised inside the model with training-split statistics.
- **Training**: {cfg.training.epochs} epochs, batch {cfg.training.batch_size} per process,
  AdamW lr {cfg.training.learning_rate}, {cfg.training.nproc} DDP process(es).
- **Operating threshold**: {cfg.evaluation.threshold}.
- **Produced by**: kfkit {__version__}{f", pipeline run {run_id}" if run_id else ""}.

## Test metrics

| metric | value |
|---|---|
{rows}

## Intended use and limits

Scores rows drawn from the same population as the training data. The published `reference.parquet`
lets the drift detector flag when live traffic moves away from it; retrain when it does.
"""
