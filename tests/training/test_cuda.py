"""The CUDA path (NCCL, bf16/fp16 autocast, pinned input): runs only on a machine with a CUDA GPU."""

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_bf16_autocast_on_the_gpu(bc_prepared, tmp_path, run_worker):
    from kfkit.model import load_exported, load_model

    status, summary = run_worker(bc_prepared, tmp_path / "model", "training.epochs=3", "training.precision=auto")
    assert status == 0
    assert summary["device"] == "cuda:0"
    assert summary["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert summary["history"][-1]["train_loss"] < summary["history"][0]["train_loss"]
    model, _ = load_model(tmp_path / "model")
    x = torch.randn(17, 30) * 10 + 50
    with torch.inference_mode():
        torch.testing.assert_close(load_exported(tmp_path / "model")(x), model(x), rtol=0, atol=1e-6)


def test_fp16_with_loss_scaling_on_the_gpu(bc_prepared, tmp_path, run_worker):
    status, summary = run_worker(bc_prepared, tmp_path / "model", "training.epochs=3", "training.precision=fp16")
    assert status == 0
    assert summary["precision"] == "fp16"
    assert all(h["train_loss"] == h["train_loss"] for h in summary["history"])  # no NaN: the scaler did its job


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL across processes needs 2 GPUs")
def test_two_nccl_processes(bc_prepared, tmp_path):
    from kfkit.config import compose
    from kfkit.training.launcher import train

    summary = train(bc_prepared, compose(["training.nproc=2", "training.epochs=3"]), tmp_path / "model")
    assert summary["backend"] == "nccl" and summary["world_size"] == 2
