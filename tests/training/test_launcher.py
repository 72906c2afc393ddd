"""torchrun launch of the DDP worker."""

import json

import pytest

from kfkit.config import compose
from kfkit.errors import TrainingError
from kfkit.model import load_model
from kfkit.training.launcher import torchrun_command, train


def test_command_is_torchrun_standalone():
    command = torchrun_command("p", "c.json", "out", 2)
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=2" in command
    assert command[command.index("-m", 3) + 1] == "kfkit.training.worker"


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path, trained_breast_cancer):
    cfg = compose(["training.epochs=4", "training.nproc=2", "training.log_every=1"])
    summary = train(trained_breast_cancer["prepared"], cfg, tmp_path / "model")
    assert summary["world_size"] == 2
    assert summary["backend"] == "gloo"
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3, 4]
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    model, spec = load_model(tmp_path / "model")
    assert spec.extra["world_size"] == 2
    assert len(spec.feature_names) == 30
    assert json.loads((tmp_path / "model" / "training.json").read_text())["pos_weight"] > 1


def test_worker_failure_is_a_training_error(tmp_path):
    (tmp_path / "prepared").mkdir()  # no schema.json: the worker fails
    with pytest.raises(TrainingError, match="torchrun exited with status"):
        train(tmp_path / "prepared", compose(["training.nproc=1", "training.epochs=1"]), tmp_path / "model")
