"""Each component called directly through ``python_func``, as a pod would call it."""

import json

import numpy as np
import pandas as pd
import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Markdown, Metrics, Model

from kfkit.components.evaluate import evaluate
from kfkit.components.gate import gate
from kfkit.components.prep import prep
from kfkit.components.publish import publish
from kfkit.components.train import train
from kfkit.config import to_dict
from kfkit.errors import GateFailed
from kfkit.model import load_scorer
from kfkit.registry import open_registry, verify


def _gate_outputs(tmp_path, tag):
    return {"decision": Artifact(uri=str(tmp_path / f"gate-{tag}.json")),
            "report": Markdown(uri=str(tmp_path / f"gate-{tag}.md")),
            "gate_metrics": Metrics(uri=str(tmp_path / f"gate-metrics-{tag}"))}  # fmt: skip


@pytest.mark.slow
def test_prep_train_evaluate_gate_publish_chain(tmp_path, make_config):
    config = to_dict(make_config("training.epochs=15", "training.nproc=1", "evaluation.segments=[mean_radius]"))
    prepared = Dataset(uri=str(tmp_path / "prepared"))
    prep.python_func(config=config, prepared=prepared)
    assert prepared.metadata["rows"]["train"] > 300
    assert (tmp_path / "prepared" / "train.parquet").is_file()

    model = Model(uri=str(tmp_path / "model"))
    training_metrics = Metrics(uri=str(tmp_path / "training_metrics"))
    train.python_func(config=config, prepared=prepared, model=model, training_metrics=training_metrics)
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert training_metrics.metadata["samples_per_s"] > 0
    assert model.metadata["world_size"] == 1

    kinds = {"metrics": Metrics, "roc": ClassificationMetrics, "report": HTML, "evaluation": Artifact}
    outputs = {name: cls(uri=str(tmp_path / name)) for name, cls in kinds.items()}
    evaluate.python_func(config=config, prepared=prepared, model=model, **outputs)
    assert outputs["metrics"].metadata["accuracy"] >= 0.9
    assert 0 < outputs["metrics"].metadata["threshold"] < 1
    assert "ece" in outputs["metrics"].metadata
    assert outputs["roc"].metadata["confidenceMetrics"]
    assert outputs["roc"].metadata["confusionMatrix"]["rows"]
    page = (tmp_path / "report").read_text()
    assert page.count("<img") == 3 and "mean_radius" in page
    threshold = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())["threshold"]

    first = _gate_outputs(tmp_path, "1")
    gate.python_func(config=config, prepared=prepared, evaluation=outputs["evaluation"], **first)
    decision = json.loads((tmp_path / "gate-1.json").read_text())
    assert decision["passed"] and decision["champion"] is None  # first run: no production version yet
    assert "## Gate PASSED" in (tmp_path / "gate-1.md").read_text()
    assert first["gate_metrics"].metadata["passed"] == 1.0

    result = publish.python_func(config=config, prepared=prepared, model=model, evaluation=outputs["evaluation"],
                                 gate=first["decision"], run_id="run-1")  # fmt: skip
    assert (result.version, result.promoted_to) == ("1", "production")
    folder = tmp_path / "registry" / "breast-cancer-mlp" / "1"
    assert result.model_uri == folder.as_uri()
    manifest = verify(folder)
    expected = {"model.safetensors", "model.json", "metrics.json", "reference.parquet", "README.md", "config.json",
                "lineage.json", "gate.json", "schema.json", "stats.json"}  # fmt: skip
    assert expected <= set(manifest["files"])
    assert manifest["metadata"]["run_id"] == "run-1"
    assert json.loads((folder / "model.json").read_text())["threshold"] == threshold  # what the server uses
    lineage = json.loads((folder / "lineage.json").read_text())
    assert lineage["pipeline_run_id"] == "run-1" and len(lineage["dataset"]["sha256"]) == 64
    assert len(lineage["config_sha256"]) == 64 and lineage["code"]["kfkit"]
    assert json.loads((folder / "config.json").read_text())["model"]["name"] == "breast-cancer-mlp"
    card = (folder / "README.md").read_text()
    assert "run-1" in card and "Operating threshold" in card
    trained = json.loads((folder / "training.json").read_text())  # the card says what "auto" resolved to
    assert f"batch {trained['settings']['batch_size']} per process" in card and "auto" not in card
    assert f"published epoch {trained['published_epoch']} of {trained['epochs_run']} run" in card
    reference = pd.read_parquet(folder / "reference.parquet")  # with the model's answers, for output drift
    score, spec = load_scorer(folder)
    np.testing.assert_allclose(reference["probability"], score(reference[spec.feature_names].to_numpy("float32")))
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["metrics"]["accuracy"] == outputs["metrics"].metadata["accuracy"]
    registry = open_registry((tmp_path / "registry").as_uri())
    assert registry.aliases("breast-cancer-mlp") == {"production": "1"}
    assert [e.action for e in registry.audit("breast-cancer-mlp")] == ["publish", "promote"]

    # Second run, same model: compared with production on the same rows, and it passes.
    second = _gate_outputs(tmp_path, "2")
    gate.python_func(config=config, prepared=prepared, evaluation=outputs["evaluation"], **second)
    decision = json.loads((tmp_path / "gate-2.json").read_text())
    assert decision["passed"] and decision["champion"]["version"] == "1"

    # A candidate whose test metrics fall below the floor is stopped, with every reason in one line.
    strict = json.loads(json.dumps(config))
    strict["gate"]["min_metrics"] = {"ece": 0.0}  # a ceiling no model meets (1.01 floors are refused up front)
    third = _gate_outputs(tmp_path, "3")
    with pytest.raises(GateFailed, match=r"gate rejected breast-cancer-mlp: ece .* > ceiling 0"):
        gate.python_func(config=strict, prepared=prepared, evaluation=outputs["evaluation"], **third)
    assert json.loads((tmp_path / "gate-3.json").read_text())["passed"] is False  # the decision is still written
    assert third["decision"].metadata["passed"] is False


def test_prep_rejects_bad_config_before_doing_work(tmp_path, make_config):
    config = to_dict(make_config())
    config["dataset"]["kind"] = "imagenet"
    from kfkit.errors import ConfigError

    with pytest.raises(ConfigError, match="imagenet"):
        prep.python_func(config=config, prepared=Dataset(uri=str(tmp_path / "p")))
    assert not (tmp_path / "p").exists()
