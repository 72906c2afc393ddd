"""torchrun launch of the DDP worker."""

import json

import numpy as np
import pytest
import torch

from kfkit.config import compose
from kfkit.errors import TrainingError
from kfkit.model import EXPORT_FILE, load_exported, load_model
from kfkit.training.launcher import torchrun_command, train


def test_command_is_torchrun_standalone():
    command = torchrun_command("p", "c.json", "out", 2)
    assert command[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    assert "--nproc_per_node=2" in command
    assert command[command.index("-m", 3) + 1] == "kfkit.training.worker"


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path, bc_prepared):
    cfg = compose(["training.epochs=4", "training.nproc=2", "training.log_every=1", "training.device=cpu"])
    summary = train(bc_prepared, cfg, tmp_path / "model")
    assert summary["world_size"] == 2
    assert summary["backend"] == "gloo"
    assert summary["precision"] == "fp32"  # auto on the CPU
    history = summary["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(h["samples_per_s"] > 0 and h["samples_per_s_per_process"] == h["samples_per_s"] / 2 for h in history)
    assert history[-1]["lr"] < history[0]["lr"]  # cosine decay
    model, spec = load_model(tmp_path / "model")
    assert spec.extra["world_size"] == 2
    assert len(spec.feature_names) == 30
    assert json.loads((tmp_path / "model" / "training.json").read_text())["pos_weight"] > 1
    assert not (tmp_path / "model.ckpt").exists()  # the checkpoint is gone once the model is written

    # The exported graph serves exactly what the trained module computes, at any batch size.
    assert summary["export"]["file"] == EXPORT_FILE
    exported = load_exported(tmp_path / "model")
    rows = np.random.default_rng(0).normal(size=(17, 30)).astype(np.float32) * 10 + 50
    for batch in (1, 17):
        x = torch.from_numpy(rows[:batch])
        with torch.inference_mode():
            torch.testing.assert_close(exported(x), model(x), rtol=0, atol=1e-6)


def test_worker_failure_is_a_training_error(tmp_path):
    (tmp_path / "prepared").mkdir()  # no schema.json: the worker fails
    with pytest.raises(TrainingError, match="torchrun exited with status"):
        train(tmp_path / "prepared", compose(["training.nproc=1", "training.epochs=1"]), tmp_path / "model")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_worker_explains_what_it_refuses(tmp_path, bc_prepared):
    cfg = compose(["training.nproc=1", "training.epochs=1", "training.device=cuda"])
    with pytest.raises(TrainingError, match="training.device=cuda but torch .* sees no CUDA device"):
        train(bc_prepared, cfg, tmp_path / "model")
