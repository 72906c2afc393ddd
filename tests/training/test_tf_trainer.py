"""TensorFlow/Keras path: training, the SavedModel signature TensorFlow Serving calls, and the scorer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kfkit.config import compose
from kfkit.errors import ConfigError, InvalidInput, ModelLoadError
from kfkit.evaluation.metrics import compute_metrics
from kfkit.model import SAVED_MODEL_DIR, load_scorer, load_spec

EPOCHS = 8


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from kfkit.data.prep import prepare

    out = tmp_path_factory.mktemp("tf") / "prepared"
    prepare(compose([]).dataset, out)
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> tuple[Path, dict]:
    """A TensorFlow model trained for a few epochs through the public entry point."""
    from kfkit.training.tf_trainer import train_tf

    out = tmp_path_factory.mktemp("tf") / "model"
    cfg = compose(["model.framework=tensorflow", f"training.epochs={EPOCHS}", "training.log_every=2"])
    return out, train_tf(prepared, cfg, out)


def test_import_loads_no_tensorflow():
    code = "import sys, kfkit.training.tf_trainer, kfkit.model.keras; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_training_writes_a_servable_model_with_sane_metrics(trained, prepared):
    out, summary = trained
    assert (out / SAVED_MODEL_DIR / "saved_model.pb").is_file()
    assert not list(out.glob("*.safetensors"))
    assert json.loads((out / "training.json").read_text()) == summary
    assert summary["framework"] == "tensorflow" and summary["world_size"] == 1
    assert summary["backend"] == "ring" and summary["device"] == "cpu"
    history = summary["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    assert {"train_loss", "val_loss", "val_pr_auc", "lr", "samples_per_s"} <= set(history[0])
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["lr"] < history[0]["lr"]  # cosine schedule
    assert summary["pos_weight"] > 1  # negatives / positives of the training split
    spec = load_spec(out)
    assert spec.framework == "tensorflow" and len(spec.feature_names) == 30

    score, _ = load_scorer(out)  # the path evaluation and the smoke test take
    test = pd.read_parquet(prepared / "test.parquet")
    metrics = compute_metrics(test[spec.label].to_numpy(), score(test[spec.feature_names].to_numpy())).metrics
    assert metrics["roc_auc"] >= 0.97, metrics  # 0.978 on the hash split
    assert metrics["accuracy"] >= 0.9, metrics


@pytest.mark.slow
def test_saved_model_signature_is_what_tf_serving_calls(trained):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(trained[0] / SAVED_MODEL_DIR))
    assert list(loaded.signatures) == ["serving_default"]
    signature = loaded.signatures["serving_default"]
    args, inputs = signature.structured_input_signature
    assert args == ()
    assert list(inputs) == ["features"]
    assert inputs["features"].dtype == tf.float32
    assert inputs["features"].shape.as_list() == [None, 30]
    outputs = signature.structured_outputs
    assert list(outputs) == ["probability"]
    assert outputs["probability"].dtype == tf.float32
    assert outputs["probability"].shape.as_list() == [None]
    result = signature(features=tf.zeros([3, 30]))["probability"].numpy()
    assert result.shape == (3,) and np.all((result > 0) & (result < 1))


@pytest.mark.slow
def test_scorer_matches_the_in_memory_model_and_runs_are_reproducible(prepared, tmp_path):
    import tensorflow as tf

    from kfkit.model.keras import export_saved_model, load_tf_scorer
    from kfkit.training.tf_trainer import fit_tf_model

    cfg = compose(["model.framework=tensorflow", "training.epochs=2"])
    run = fit_tf_model(prepared, cfg)
    export_saved_model(run.model, run.spec.input_dim, tmp_path)
    score = load_tf_scorer(tmp_path)
    x = pd.read_parquet(prepared / "test.parquet")[run.spec.feature_names].to_numpy(dtype="float32")
    expected = tf.sigmoid(run.model(x, training=False)).numpy().reshape(-1)
    got = score(x)
    assert got.dtype == np.float32 and got.shape == (len(x),)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert score(x[:0]).shape == (0,)

    # Keras applies the class weights per row (its losses average the last axis, so the [rows, 1]
    # output shape matters): its weighted loss equals BCEWithLogitsLoss(pos_weight)'s.
    import keras

    from kfkit.training.tf_trainer import _weighted_bce

    y = pd.read_parquet(prepared / "test.parquet")[run.spec.label].to_numpy(dtype="float32")
    pos_weight = run.summary["pos_weight"]
    logits = run.model(x, training=False)
    keras_loss = keras.losses.BinaryCrossentropy(from_logits=True)(
        y[:, None], logits, sample_weight=np.where(y > 0.5, pos_weight, 1.0)
    )
    assert float(keras_loss) == pytest.approx(_weighted_bce(np.asarray(logits).reshape(-1), y, pos_weight), rel=1e-5)

    again = fit_tf_model(prepared, cfg)  # same seed: same weights, same losses
    losses = [(h["train_loss"], h["val_loss"]) for h in run.summary["history"]]
    assert losses == [(h["train_loss"], h["val_loss"]) for h in again.summary["history"]]
    with pytest.raises(InvalidInput, match=r"rows x 30 features, got shape \[2, 29\]"):
        score(x[:2, :29])


@pytest.mark.slow
def test_early_stopping_keeps_the_best_epoch(prepared, tmp_path):
    from kfkit.training.tf_trainer import train_tf

    # A learning rate high enough that validation stops improving well within 40 epochs (at the default the
    # loss keeps falling on a saturated PR-AUC, which counts as improving).
    overrides = ["model.framework=tensorflow", "training.epochs=40", "training.early_stopping_patience=2"]
    cfg = compose([*overrides, "training.learning_rate=0.03"])
    summary = train_tf(prepared, cfg, tmp_path)
    history = summary["history"]
    assert summary["stopped_early"] and len(history) < 40
    assert summary["best_epoch"] == len(history) - 2
    best = max(h["val_pr_auc"] for h in history)
    assert summary["best_val_pr_auc"] == best
    # The exported model is the best epoch's: its validation PR-AUC is the best one seen.
    from sklearn.metrics import average_precision_score

    score, spec = load_scorer(tmp_path)
    val = pd.read_parquet(prepared / "val.parquet")
    pr_auc = average_precision_score(val[spec.label], score(val[spec.feature_names].to_numpy()))
    assert pr_auc == pytest.approx(best, abs=1e-6)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("training.precision=fp16", "training.precision=fp16 needs a GPU"),
        ("training.device=cuda", "training.device=cuda but TensorFlow sees no GPU"),
    ],
)
def test_cpu_machine_refuses_gpu_only_settings(prepared, tmp_path, override, match):
    from kfkit.training.tf_trainer import train_tf

    pytest.importorskip("tensorflow")
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match=match):
        train_tf(prepared, compose(["model.framework=tensorflow", override]), tmp_path)
    assert not (tmp_path / SAVED_MODEL_DIR).exists()


def test_scorer_names_a_missing_saved_model(tmp_path):
    from kfkit.model.keras import load_tf_scorer

    with pytest.raises(ModelLoadError, match="saved_model.pb is missing"):
        load_tf_scorer(tmp_path)


WORKER = """
import json, sys
from kfkit.config import compose
from kfkit.training.tf_trainer import train_tf
summary = train_tf(sys.argv[1], compose(["model.framework=tensorflow", "training.epochs=2"]), sys.argv[2])
print("SUMMARY", json.dumps({"world_size": summary["world_size"], "loss": summary["history"][-1]["train_loss"]}))
"""


@pytest.mark.slow
def test_two_workers_from_tf_config_train_one_model(prepared, tmp_path, free_port):
    """MultiWorkerMirroredStrategy across two processes (as a TFJob's pods): the chief alone writes."""
    import os

    hosts = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    workers = []
    for index in range(2):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TMPDIR": str(tmp_path)}
        out = tmp_path / f"out-{index}"
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(prepared), str(out)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    outputs = [worker.communicate(timeout=300)[0] for worker in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    summaries = [json.loads(o.split("SUMMARY ", 1)[1].splitlines()[0]) for o in outputs]
    assert [s["world_size"] for s in summaries] == [2, 2]
    assert summaries[0]["loss"] == summaries[1]["loss"]  # one model: gradients all-reduced every step
    assert (tmp_path / "out-0" / SAVED_MODEL_DIR / "saved_model.pb").is_file()  # worker 0 is the chief
    assert not (tmp_path / "out-1").exists()
    assert not list(tmp_path.glob("kfkit-tf-worker-*"))  # the other worker's scratch copy is gone
