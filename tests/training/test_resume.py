"""A torchrun run killed mid-epoch resumes from its checkpoint and ends exactly where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kfkit.config import compose, to_dict
from kfkit.training.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from kfkit.training.launcher import torchrun_command, train
from kfkit.training.outputs import ERROR_FILE

# 2 ranks x 102 steps per epoch (6,500 rows / 2 / 32), a checkpoint every 10 steps: never at an epoch's
# end, so whichever checkpoint the kill leaves behind, the rerun must resume in the middle of an epoch.
OVERRIDES = [
    "training.device=cpu",  # bit-for-bit equality is a CPU promise (some CUDA kernels use atomics)
    "training.nproc=2",
    "training.epochs=3",
    "training.batch_size=32",
    "training.checkpoint_every_steps=10",
    "training.early_stopping_patience=2",
    "training.log_every=1",
]


def _kill_one_worker_after_first_checkpoint(prepared: Path, out: Path, config: Path) -> int:
    """Start torchrun, SIGKILL one worker once a checkpoint exists, return torchrun's exit status."""
    import psutil

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(torchrun_command(prepared, config, out, 2), env=env, start_new_session=True)
    checkpoint = out.with_name(f"{out.name}.ckpt") / CHECKPOINT_FILE
    try:
        deadline = time.monotonic() + 240
        while not checkpoint.is_file():
            assert process.poll() is None, "torchrun ended before writing a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.005)
        workers = [
            p for p in psutil.Process(process.pid).children(recursive=True) if "kfkit.training.worker" in p.cmdline()
        ]
        assert len(workers) == 2
        workers[-1].send_signal(signal.SIGKILL)
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights_and_metrics(fraud_prepared, tmp_path, capfd):
    cfg = compose(["dataset=synthetic_fraud", *OVERRIDES])
    reference = train(fraud_prepared, cfg, tmp_path / "uninterrupted")
    assert reference["resumed_from_step"] is None

    out = tmp_path / "resumed"
    config = tmp_path / "config.json"
    config.write_text(json.dumps(to_dict(cfg)))
    status = _kill_one_worker_after_first_checkpoint(fraud_prepared, out, config)
    assert status != 0
    assert not (out / "training.json").exists()  # it really died before finishing
    checkpoint = load_checkpoint(out.with_name("resumed.ckpt") / CHECKPOINT_FILE)
    assert 0 < checkpoint["step_in_epoch"] < 102
    assert checkpoint["global_step"] < 3 * 102

    capfd.readouterr()
    resumed = train(fraud_prepared, cfg, out)
    assert "[train] resuming from" in capfd.readouterr().out
    assert resumed["resumed_from_step"] == checkpoint["global_step"]
    assert not out.with_name("resumed.ckpt").exists()  # removed once the model is written

    weights, expected = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tmp_path / "uninterrupted" / "model.safetensors")),
    )
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(weights[name], tensor, rtol=0, atol=1e-6)
    assert len(resumed["history"]) == len(reference["history"])
    for got, want in zip(resumed["history"], reference["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_pr_auc", "lr"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert resumed["best_epoch"] == reference["best_epoch"]


def test_checkpoint_of_another_run_is_refused_clearly(bc_prepared, tmp_path, run_worker):
    save_checkpoint({"format": 1, "fingerprint": {"epochs": 99}}, tmp_path / "model.ckpt" / CHECKPOINT_FILE)
    status, summary = run_worker(bc_prepared, tmp_path / "model", "training.epochs=2")
    assert status == 1 and summary is None
    message = (tmp_path / "model" / ERROR_FILE).read_text()
    assert "was written by a different training run" in message
    assert "epochs: checkpoint 99 vs now 2" in message
    assert "delete it to train from scratch" in message
