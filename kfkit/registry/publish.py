"""Assemble what a registry version holds (model, metrics, config, lineage, model card ...) and publish it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit import __version__

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig
    from kfkit.registry import AuditEvent, ModelVersion

__all__ = [
    "assemble",
    "publish_release",
    "promote_release",
    "lineage",
    "code_version",
    "REFERENCE_FILE",
    "MODEL_CARD_FILE",
    "LINEAGE_FILE",
    "CONFIG_FILE",
]

REFERENCE_FILE = "reference.parquet"
MODEL_CARD_FILE = "README.md"
LINEAGE_FILE = "lineage.json"
CONFIG_FILE = "config.json"


def assemble(
    cfg: KfkitConfig,
    *,
    model_dir: str | Path,
    prepared_dir: str | Path,
    evaluation_dir: str | Path,
    out_dir: str | Path,
    run_id: str = "",
    gate_path: str | Path | None = None,
) -> Path:
    """Gather one release into ``out_dir``.

    The folder holds everything training wrote (model.safetensors or a saved_model/ folder, model.json,
    exported graphs, training.json), with model.json's ``threshold`` set to the operating threshold
    evaluate picked; metrics.json (test-set evaluation); schema.json and stats.json (from prep);
    reference.parquet (training rows the drift detector compares live traffic against); config.json
    (the whole run config); lineage.json (dataset, config and code digests, pipeline run id); gate.json
    (the gate decision, when given) and README.md (the model card).
    """
    import pandas as pd

    from kfkit.config import to_dict
    from kfkit.model import SPEC_FILE, load_scorer
    from kfkit.model.names import PROBABILITY
    from kfkit.training.outputs import TRAINING_SUMMARY_FILE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(model_dir, out, dirs_exist_ok=True)
    evaluation = json.loads((Path(evaluation_dir) / "metrics.json").read_text())
    shutil.copy2(Path(evaluation_dir) / "metrics.json", out / "metrics.json")
    # The server labels rows with spec.threshold: make it the threshold the metrics were measured at.
    spec = json.loads((out / SPEC_FILE).read_text())
    spec["threshold"] = evaluation["threshold"]
    (out / SPEC_FILE).write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n")
    for name in ("schema.json", "stats.json"):
        shutil.copy2(Path(prepared_dir) / name, out / name)
    schema = json.loads((Path(prepared_dir) / "schema.json").read_text())
    drawn = Path(prepared_dir) / REFERENCE_FILE  # prep's hash-drawn sample: no need to read the whole split
    if drawn.exists():
        reference = pd.read_parquet(drawn, columns=schema["feature_names"])
    else:  # prepared by an older kfkit
        train = pd.read_parquet(Path(prepared_dir) / "train.parquet", columns=schema["feature_names"])
        reference = train.sample(n=min(cfg.drift.reference_rows, len(train)), random_state=cfg.dataset.seed)
    reference = reference.reset_index(drop=True)
    if PROBABILITY not in reference.columns:  # the model's own answers: the output-drift test's reference
        score, _ = load_scorer(out)
        reference[PROBABILITY] = score(reference[schema["feature_names"]].to_numpy(dtype="float32"))
    reference.to_parquet(out / REFERENCE_FILE, index=False)
    (out / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")
    facts = lineage(cfg, prepared_dir, run_id)
    (out / LINEAGE_FILE).write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
    gate = None
    if gate_path is not None:
        shutil.copy2(gate_path, out / "gate.json")
        gate = json.loads(Path(gate_path).read_text())
    training_path = out / TRAINING_SUMMARY_FILE  # what training resolved ("auto" settings) and published
    training = json.loads(training_path.read_text()) if training_path.is_file() else {}
    (out / MODEL_CARD_FILE).write_text(_model_card(cfg, schema, evaluation, facts, gate, training))
    return out


def lineage(cfg: KfkitConfig, prepared_dir: str | Path, run_id: str = "") -> dict[str, Any]:
    """Where a version came from: dataset digests, config digest, code version and pipeline run id."""
    from kfkit.config import to_dict
    from kfkit.registry import sha256_file

    prepared = Path(prepared_dir)
    splits = {p.name: sha256_file(p) for p in sorted(prepared.glob("*.parquet"))}
    splits["schema.json"] = sha256_file(prepared / "schema.json")
    dataset: dict[str, Any] = {"kind": cfg.dataset.kind, "splits": splits}
    dataset["sha256"] = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(splits.items())).encode()).hexdigest()
    if cfg.dataset.path:
        dataset["path"] = cfg.dataset.path
        if Path(cfg.dataset.path).is_file():
            dataset["source_sha256"] = sha256_file(cfg.dataset.path)
    config_text = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"))
    return {
        "dataset": dataset,
        "config_sha256": hashlib.sha256(config_text.encode()).hexdigest(),
        "code": code_version(),
        "pipeline_run_id": run_id,
    }


def code_version() -> dict[str, Any]:
    """The kfkit version and, where known, the git commit it was built from.

    The commit comes from the checkout kfkit runs from, else from $KFKIT_GIT_COMMIT (set it when building
    an image, where there is no .git).
    """
    out: dict[str, Any] = {"kfkit": __version__}
    repo = Path(__file__).resolve().parents[1]
    if (repo / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()  # fmt: skip
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
            out.update(git_commit=commit, git_dirty=bool(dirty))
        except (OSError, subprocess.SubprocessError):
            pass
    if "git_commit" not in out and os.environ.get("KFKIT_GIT_COMMIT"):
        out["git_commit"] = os.environ["KFKIT_GIT_COMMIT"]
    return out


def publish_release(cfg: KfkitConfig, release_dir: str | Path, *, run_id: str = "") -> ModelVersion:
    """Publish an assembled release to ``cfg.registry`` as the next version of ``cfg.model.name``."""
    from kfkit.registry import from_config

    release = Path(release_dir)
    evaluation = json.loads((release / "metrics.json").read_text())
    facts = json.loads((release / LINEAGE_FILE).read_text()) if (release / LINEAGE_FILE).is_file() else {}
    metadata: dict[str, Any] = {
        "metrics": evaluation["metrics"],
        "threshold": evaluation["threshold"],
        "dataset": cfg.dataset.kind,
        "kfkit_version": __version__,
        "run_id": run_id,
        "lineage": {
            "dataset_sha256": facts.get("dataset", {}).get("sha256"),
            "config_sha256": facts.get("config_sha256"),
            "code": facts.get("code"),
            "pipeline_run_id": run_id,
        },
    }
    if (release / "gate.json").is_file():
        gate = json.loads((release / "gate.json").read_text())
        champion = gate.get("champion") or {}
        metadata["gate"] = {"passed": gate["passed"], "champion_version": champion.get("version")}
    return from_config(cfg.registry).publish(release, name=cfg.model.name, metadata=metadata)


def promote_release(cfg: KfkitConfig, version: ModelVersion, *, run_id: str = "") -> AuditEvent | None:
    """Point ``cfg.registry.promote_to`` at a freshly published version (None if promote_to is unset)."""
    from kfkit.registry import from_config

    alias = cfg.registry.promote_to
    if not alias:
        return None
    reason = f"passed the gate in pipeline run {run_id}" if run_id else "passed the gate"
    return from_config(cfg.registry).promote(version.name, version.version, alias=alias, reason=reason)


def _model_card(
    cfg: KfkitConfig,
    schema: dict,
    evaluation: dict,
    facts: dict[str, Any],
    gate: dict[str, Any] | None,
    training: dict[str, Any],
) -> str:
    metrics = evaluation["metrics"]
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in metrics.items() if k != "rows")
    splits = ", ".join(f"{k} {v} rows ({schema['positives'][k]} positive)" for k, v in schema["rows"].items())
    code = facts.get("code", {})
    commit = f", commit {code['git_commit'][:12]}{' (modified)' if code.get('git_dirty') else ''}" if code.get(
        "git_commit") else ""  # fmt: skip
    run_id = facts.get("pipeline_run_id") or ""
    run_part = f", pipeline run {run_id}" if run_id else ""
    note = f" {evaluation['threshold_note']}" if evaluation.get("threshold_note") else ""
    if gate is None:
        gate_line = "not recorded"
    elif gate.get("champion"):
        champion = gate["champion"]
        gate_line = (
            f"{'passed' if gate['passed'] else 'failed'} {len(gate.get('checks', []))} checks, against "
            f"{champion['alias']} version {champion['version']} on the same test rows"
        )
    else:
        gate_line = f"{'passed' if gate['passed'] else 'failed'} {len(gate.get('checks', []))} absolute checks"
    return f"""# Model card: {cfg.model.name}

- **Task**: binary classification of `{schema["label"]}` (1 = positive)
  from {len(schema["feature_names"])} numeric features.
- **Data**: `{cfg.dataset.kind}`{f" ({cfg.dataset.path})" if cfg.dataset.path else ""}; {splits}.
- **Model**: {cfg.model.framework} MLP, hidden layers {list(cfg.model.hidden_dims)}, dropout {cfg.model.dropout};
  inputs are standardised inside the model with training-split statistics.
- **Training**: {_training_line(cfg, training)}.
- **Operating threshold**: {evaluation["threshold"]:.6g} (rule `{evaluation.get("threshold_rule", "fixed")}`,
  picked on the validation split).{note}
- **Gate**: {gate_line}.
- **Lineage**: dataset sha256 `{facts.get("dataset", {}).get("sha256", "")[:16]}`, config sha256
  `{facts.get("config_sha256", "")[:16]}`, kfkit {code.get("kfkit", __version__)}{commit}{run_part}.

## Test metrics

| metric | value |
|---|---|
{rows}

## Intended use and limits

Scores rows drawn from the same population as the training data. The published `reference.parquet`
lets the drift detector flag when live traffic moves away from it; retrain when it does.
"""


def _training_line(cfg: KfkitConfig, training: dict[str, Any]) -> str:
    """What training ran with: the resolved settings from training.json, the config's where it has none."""
    settings = training.get("settings") or {}
    epochs = settings.get("epochs", cfg.training.epochs)
    batch = settings.get("batch_size", training.get("batch_size", cfg.training.batch_size))
    lr = settings.get("learning_rate", cfg.training.learning_rate)
    lr_text = f"{lr:.3g}" if isinstance(lr, float) else str(lr)
    line = (f"up to {epochs} epochs, batch {batch} per process, AdamW lr {lr_text}, "
            f"{training.get('world_size', cfg.training.nproc)} DDP process(es)")  # fmt: skip
    if "published_epoch" in training:
        line += f"; published epoch {training['published_epoch']} of {training.get('epochs_run', epochs)} run"
    return line
