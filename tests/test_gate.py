"""The gate: absolute floors, champion/challenger on the same rows, the decision artifact and its messages."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from kfkit.config import compose
from kfkit.errors import ConfigError, GateFailed, RegistryError
from kfkit.evaluation.metrics import evaluate
from kfkit.evaluation.report import write_report
from kfkit.gate import check_gate_config, decide, run_gate
from kfkit.model import build_model, load_model, save_model
from kfkit.registry import open_registry

GOOD = {"roc_auc": 0.99, "pr_auc": 0.98, "f1": 0.95, "accuracy": 0.96, "precision": 0.95, "recall": 0.95,
        "ece": 0.03, "brier": 0.04}  # fmt: skip


def _gate(**changes):
    return replace(compose([]).gate, **changes)


def test_first_run_has_only_absolute_checks():
    decision = decide(GOOD, _gate(min_metrics={"roc_auc": 0.8, "ece": 0.1}), model="m")
    assert decision.passed and [c.kind for c in decision.checks] == ["min", "min"]
    low = decide({**GOOD, "roc_auc": 0.51, "ece": 0.2}, _gate(min_metrics={"roc_auc": 0.8, "ece": 0.1}), model="m")
    assert not low.passed
    assert "roc_auc 0.5100 < floor 0.8 (gate.min_metrics)" in low.summary()
    assert "ece 0.2000 > ceiling 0.1" in low.summary()  # lower is better: a ceiling
    assert low.summary().endswith("nothing was published or deployed")
    nan = decide({**GOOD, "roc_auc": float("nan")}, _gate(), model="m")
    assert not nan.passed


def test_champion_comparison_allows_the_margin_and_no_more():
    champion = {"alias": "production", "version": "3", "metrics": {**GOOD, "roc_auc": 0.99, "pr_auc": 0.98}}
    gate = _gate(max_regression=0.01, compare_metrics=["roc_auc", "pr_auc", "ece"])
    within = decide({**GOOD, "roc_auc": 0.9805, "pr_auc": 0.975, "ece": 0.035}, gate, model="m", champion=champion)
    assert within.passed, within.summary()
    worse = decide({**GOOD, "roc_auc": 0.97, "ece": 0.05}, gate, model="m", champion=champion)
    assert not worse.passed
    assert [c.metric for c in worse.failed] == ["roc_auc", "ece"]
    assert "roc_auc 0.9700 is 0.0200 below production version 3 (0.9900) on the same test rows" in worse.summary()
    assert "more than gate.max_regression=0.01" in worse.summary()
    assert "ece 0.0500 is 0.0200 above production version 3" in worse.summary()
    markdown = worse.to_markdown()
    assert (
        "## Gate FAILED: m" in markdown
        and "| roc_auc vs champion | 0.9700 | ≥ 0.9800 | 0.9900 | **fail** |" in markdown
    )


def test_disabled_gate_passes_with_a_note():
    decision = decide({**GOOD, "roc_auc": 0.1}, _gate(enabled=False), model="m")
    assert decision.passed and not decision.checks and "gate.enabled=false" in decision.notes[0]


def test_unknown_metric_names_fail_up_front():
    with pytest.raises(ConfigError, match=r"gate.min_metrics names \['rocauc'\].*roc_auc"):
        check_gate_config(_gate(min_metrics={"rocauc": 0.9}))
    with pytest.raises(ConfigError, match="gate.compare_metrics"):
        check_gate_config(_gate(compare_metrics=["auc"]))


@pytest.fixture
def setup(trained_breast_cancer, tmp_path):
    """A registry whose production version is the trained model, and its evaluation as a candidate."""
    cfg = compose(["training.nproc=1", f"registry.uri=file://{tmp_path / 'registry'}"])
    registry = open_registry(cfg.registry.uri)
    champion = registry.publish(trained_breast_cancer["model"], name=cfg.model.name)
    registry.promote(cfg.model.name, champion.version)
    good = tmp_path / "eval-good"
    write_report(evaluate(trained_breast_cancer["model"], trained_breast_cancer["prepared"], cfg.evaluation), good,
                 title="good")  # fmt: skip
    return cfg, registry, good, trained_breast_cancer["prepared"]


def test_an_equal_candidate_passes_against_production(setup):
    cfg, registry, good, prepared = setup
    decision = run_gate(cfg, prepared_dir=prepared, evaluation_dir=good, registry=registry)
    assert decision.passed, decision.summary()
    assert decision.champion["version"] == "1" and decision.champion["alias"] == "production"
    assert {c.kind for c in decision.checks} == {"min", "champion"}
    # The champion was scored on the same rows: same model, same rows, same ranking metrics.
    assert decision.champion["metrics"]["roc_auc"] == pytest.approx(decision.candidate["metrics"]["roc_auc"])
    assert decision.test_rows == int(decision.champion["metrics"]["rows"])
    json.dumps(decision.to_dict())  # gate.json is plain JSON


def test_an_untrained_candidate_is_stopped(setup, trained_breast_cancer, tmp_path):
    cfg, registry, _, prepared = setup
    trained, spec = load_model(trained_breast_cancer["model"])
    torch.manual_seed(7)
    untrained = build_model(spec)
    with torch.no_grad():  # the same standardisation, random weights: a real but useless model
        untrained.feature_mean.copy_(trained.feature_mean)
        untrained.feature_std.copy_(trained.feature_std)
        for p in untrained.net.parameters():
            p.mul_(0.01)
    model_dir = save_model(untrained, spec, tmp_path / "untrained")
    worse = tmp_path / "eval-worse"
    write_report(evaluate(model_dir, prepared, cfg.evaluation), worse, title="worse")
    # Only the comparison can stop it here: the floor is set below what the random model reaches.
    floor = replace(cfg, gate=replace(cfg.gate, min_metrics={"roc_auc": 0.0}))
    decision = run_gate(floor, prepared_dir=prepared, evaluation_dir=worse, registry=registry)
    assert not decision.passed
    assert {c.metric for c in decision.failed} == {"roc_auc", "pr_auc"}
    assert all(c.kind == "champion" for c in decision.failed)
    assert "below production version 1" in decision.summary()
    assert isinstance(GateFailed(decision.summary()), Exception) and GateFailed.status_code == 422


def test_a_tampered_champion_is_an_error_not_a_comparison(setup):
    cfg, registry, good, prepared = setup
    weights = registry.root / cfg.model.name / "1" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(RegistryError, match="sha256"):
        run_gate(cfg, prepared_dir=prepared, evaluation_dir=good, registry=registry)


def test_the_candidate_must_come_from_the_same_test_rows(setup, tmp_path):
    from kfkit.errors import DatasetError

    cfg, registry, good, prepared = setup
    metrics = json.loads((good / "metrics.json").read_text())
    metrics["test_sha256"] = "0" * 64
    (good / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(DatasetError, match="not the test split the candidate was evaluated on"):
        run_gate(cfg, prepared_dir=prepared, evaluation_dir=good, registry=registry)


def test_no_champion_yet_means_absolute_checks_only(trained_breast_cancer, tmp_path):
    cfg = compose([f"registry.uri=file://{tmp_path / 'empty'}"])
    good = tmp_path / "eval"
    write_report(evaluate(trained_breast_cancer["model"], trained_breast_cancer["prepared"], cfg.evaluation), good,
                 title="x")  # fmt: skip
    decision = run_gate(cfg, prepared_dir=trained_breast_cancer["prepared"], evaluation_dir=good)
    assert decision.passed and decision.champion is None
    assert "no production version of breast-cancer-mlp" in decision.notes[0]
    assert np.all([c.kind == "min" for c in decision.checks])
