"""Each component called directly through ``python_func``, as a pod would call it."""

import json

import pytest
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Metrics, Model

from kfkit.components.evaluate import evaluate
from kfkit.components.prep import prep
from kfkit.components.publish import publish
from kfkit.components.train import train
from kfkit.config import to_dict
from kfkit.registry import verify


@pytest.mark.slow
def test_prep_train_evaluate_publish_chain(tmp_path, make_config):
    config = to_dict(make_config("training.epochs=15", "training.nproc=1"))
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
    assert outputs["roc"].metadata["confidenceMetrics"]
    assert outputs["roc"].metadata["confusionMatrix"]["rows"]
    assert "<img" in (tmp_path / "report").read_text()

    result = publish.python_func(
        config=config, prepared=prepared, model=model, evaluation=outputs["evaluation"], run_id="run-1"
    )
    assert result.version == "1"
    assert result.model_uri == (tmp_path / "registry" / "breast-cancer-mlp" / "1").as_uri()
    manifest = verify(tmp_path / "registry" / "breast-cancer-mlp" / "1")
    assert {"model.safetensors", "model.json", "metrics.json", "reference.parquet", "README.md"} <= set(
        manifest["files"]
    )
    assert manifest["metadata"]["run_id"] == "run-1"
    card = (tmp_path / "registry" / "breast-cancer-mlp" / "1" / "README.md").read_text()
    assert "run-1" in card
    stored = json.loads((tmp_path / "registry" / "breast-cancer-mlp" / "1" / "metrics.json").read_text())
    assert stored["metrics"]["accuracy"] == outputs["metrics"].metadata["accuracy"]


def test_prep_rejects_bad_config_before_doing_work(tmp_path, make_config):
    config = to_dict(make_config())
    config["dataset"]["kind"] = "imagenet"
    from kfkit.errors import ConfigError

    with pytest.raises(ConfigError, match="imagenet"):
        prep.python_func(config=config, prepared=Dataset(uri=str(tmp_path / "p")))
    assert not (tmp_path / "p").exists()
