"""Checkpoints: atomic writes, tensors and primitives only, RNG states restored exactly."""

import random

import numpy as np
import pytest
import torch

from kfkit.errors import TrainingError
from kfkit.training.checkpoint import (
    CHECKPOINT_FILE,
    CHECKPOINT_FORMAT,
    checkpoint_dir,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class _NotATensor:
    """Anything a weights_only load must refuse."""


def test_round_trip_of_training_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "history": [{"epoch": 1, "val_pr_auc": 0.5}],
        "ranks": [{"rng": rng_state("cpu"), "loss_sum": 1.5, "samples_seen": 3}],
    }
    path = tmp_path / "ckpt" / CHECKPOINT_FILE
    save_checkpoint(state, path)
    assert [p.name for p in path.parent.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left behind
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["model"]["weight"], model.weight)
    assert loaded["optimizer"]["param_groups"] == optimizer.state_dict()["param_groups"]
    assert loaded["scheduler"] == scheduler.state_dict()
    assert loaded["history"] == state["history"]


def test_missing_is_none_and_foreign_objects_are_refused(tmp_path):
    assert load_checkpoint(tmp_path / "nothing.pt") is None
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _NotATensor()}, tmp_path / "evil.pt")
    with pytest.raises(TrainingError, match="delete it"):
        load_checkpoint(tmp_path / "evil.pt")
    torch.save({"format": 99}, tmp_path / "future.pt")
    with pytest.raises(TrainingError, match="format"):
        load_checkpoint(tmp_path / "future.pt")


def test_rng_states_restore_every_generator(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    random.seed(3)
    save_checkpoint({"format": CHECKPOINT_FORMAT, "rng": rng_state("cpu")}, tmp_path / "c.pt")
    first = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"], "cpu")
    second = (torch.rand(5), np.random.rand(5), [random.random() for _ in range(5)])
    assert torch.equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert first[2] == second[2]


def test_default_folder_is_beside_the_model(tmp_path):
    assert checkpoint_dir(None, tmp_path / "model") == tmp_path / "model.ckpt"
    assert checkpoint_dir(str(tmp_path / "keep"), tmp_path / "model") == tmp_path / "keep"
