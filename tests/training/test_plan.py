"""The auto training settings: batch, epochs, learning rate, early stopping from the splits; processes, threads."""

import subprocess

import pytest

from kfkit.config import compose
from kfkit.training.plan import plan_training, pod_nproc, resolve_nproc, resolve_threads

# (training rows, validation rows, validation positives): breast cancer, 20k / 200k / 1M synthetic fraud rows.
BREAST_CANCER = (369, 85, 32)
FRAUD_20K = (13_000, 3_000, 60)
FRAUD_200K = (130_000, 29_999, 597)
FRAUD_1M = (650_000, 149_999, 2_991)


def _plan(*overrides, splits, world_size=1):
    train_rows, val_rows, val_positives = splits
    return plan_training(
        compose(list(overrides)).training,
        train_rows=train_rows,
        val_rows=val_rows,
        val_positives=val_positives,
        world_size=world_size,
    )


@pytest.mark.parametrize(
    ("splits", "batch", "epochs", "learning_rate", "patience"),
    [
        (BREAST_CANCER, 128, 60, 3e-3, 0),  # the breast-cancer reference's 180 steps, no early stopping
        (FRAUD_20K, 128, 20, 3e-3, 0),  # 60 positive validation rows: too few to stop on
        (FRAUD_200K, 1024, 16, 3e-3 * 8**0.5, 5),
        (FRAUD_1M, 4096, 13, 3e-3 * 32**0.5, 5),
    ],
)
def test_auto_settings_follow_the_split_size(splits, batch, epochs, learning_rate, patience):
    plan = _plan(splits=splits)
    assert (plan.batch_size, plan.global_batch, plan.epochs) == (batch, batch, epochs)
    assert plan.learning_rate == pytest.approx(learning_rate)
    assert plan.early_stopping_patience == patience
    assert plan.auto == ("batch_size", "epochs", "learning_rate", "early_stopping_patience")
    resolved = plan.apply(compose([])).training
    assert (resolved.batch_size, resolved.epochs, resolved.early_stopping_patience) == (batch, epochs, patience)


def test_auto_batch_is_global_and_an_explicit_one_is_per_process():
    two = _plan(splits=FRAUD_200K, world_size=2)
    assert (two.batch_size, two.global_batch) == (512, 1024)  # auto trains alike on 1 or 2 processes
    assert two.learning_rate == _plan(splits=FRAUD_200K).learning_rate
    explicit = _plan("training.batch_size=64", splits=FRAUD_200K, world_size=2)
    assert (explicit.batch_size, explicit.global_batch) == (64, 128)
    assert explicit.learning_rate == pytest.approx(3e-3)  # auto lr follows the global batch it gets
    assert explicit.epochs == 3  # 1,016 steps an epoch: 2,000 steps would be 2 epochs, and 3 is the floor


def test_explicit_settings_are_used_as_given():
    plan = _plan(
        "training.batch_size=32", "training.epochs=7", "training.learning_rate=0.1",
        "training.early_stopping_patience=0", splits=FRAUD_1M,
    )  # fmt: skip
    assert (plan.batch_size, plan.epochs, plan.learning_rate, plan.early_stopping_patience) == (32, 7, 0.1, 0)
    assert plan.auto == () and plan.describe(650_000, 1) == ""


def test_the_log_line_says_why_early_stopping_is_off():
    line = _plan(splits=BREAST_CANCER).describe(369, 1)
    assert "global batch 128" in line and "at most 60 epochs" in line
    assert "no early stopping (32 validation rows of the rarer class, under 100)" in line
    assert "early stopping after 5 epochs" in _plan(splits=FRAUD_200K).describe(130_000, 1)


@pytest.mark.parametrize(
    ("overrides", "cuda_devices", "expected"),
    [
        ([], 0, 1),  # the CPU: one process (gloo's per-step all-reduce costs more than it shares)
        ([], 4, 4),  # one per visible GPU
        (["training.device=cpu"], 4, 1),
        (["training.nproc=2"], 0, 2),  # asking for N still runs N
        (["training.nproc=3"], 8, 3),
    ],
)
def test_nproc_auto(overrides, cuda_devices, expected):
    assert resolve_nproc(compose(overrides).training, cuda_devices=cuda_devices) == expected


def test_nproc_auto_in_a_job_pod_is_one_per_requested_gpu():
    assert pod_nproc(compose(["training.cluster.gpus_per_node=8"]).training) == 8
    assert pod_nproc(compose([]).training) == 1  # a CPU pod
    assert pod_nproc(compose(["training.nproc=2"]).training) == 2


def test_threads_auto():
    tc = compose([]).training
    assert resolve_threads(tc, nproc=1, cuda=False, env={}) == 1
    assert resolve_threads(tc, nproc=1, cuda=False, env={"OMP_NUM_THREADS": "3"}) == 3  # the environment wins
    assert (
        resolve_threads(compose(["training.threads=2"]).training, nproc=1, cuda=False, env={"OMP_NUM_THREADS": "3"})
        == 2
    )
    assert resolve_threads(tc, nproc=64, cuda=True, env={}) == 1  # cores / nproc, at least 1


@pytest.mark.parametrize(
    ("overrides", "nproc"),
    [(["training.device=cpu"], "1"), (["training.device=cpu", "training.nproc=2"], "2")],
)
def test_launcher_starts_what_nproc_and_threads_resolve_to(tmp_path, monkeypatch, overrides, nproc):
    from kfkit.training import launcher

    seen = {}

    def fake_run(command, env, **_):
        seen.update(command=command, env=env)
        (tmp_path / "model" / "training.json").write_text('{"history": []}')
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launcher.subprocess, "run", fake_run)
    launcher.train(tmp_path / "prepared", compose(overrides), tmp_path / "model")
    assert f"--nproc_per_node={nproc}" in seen["command"]
    assert seen["env"]["OMP_NUM_THREADS"] == "1"
