"""training.precision: what each choice means on the CPU, and a clear refusal of fp16 there."""

import pytest
import torch

from kfkit.config import compose
from kfkit.errors import ConfigError
from kfkit.training.launcher import train
from kfkit.training.precision import check_precision, resolve_precision


def test_cpu_precisions():
    assert resolve_precision("auto", "cpu") == ("fp32", None)
    assert resolve_precision("fp32", "cpu") == ("fp32", None)
    assert resolve_precision("bf16", "cpu") == ("bf16", torch.bfloat16)
    with pytest.raises(ConfigError, match=r"training.precision=fp16 needs a CUDA device.*bf16"):
        resolve_precision("fp16", "cpu")
    check_precision("fp16", "cuda:0")  # allowed on a GPU


def test_launcher_refuses_fp16_on_cpu_before_starting(tmp_path):
    cfg = compose(["training.precision=fp16", "training.device=cpu", "training.nproc=1"])
    with pytest.raises(ConfigError, match="fp16"):
        train(tmp_path / "prepared", cfg, tmp_path / "model")
    assert not (tmp_path / "model").exists()  # refused before anything was written


def test_bf16_autocast_trains_on_cpu(bc_prepared, tmp_path, run_worker):
    status, summary = run_worker(
        bc_prepared, tmp_path / "model", "training.epochs=3", "training.precision=bf16", "training.device=cpu"
    )
    assert status == 0
    assert summary["precision"] == "bf16" and summary["device"] == "cpu"
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
