"""training.data=stream: each rank reads only its row groups, buffer by buffer, and trains as in memory."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from kfkit.config import compose, to_dict
from kfkit.training.checkpoint import CHECKPOINT_FILE, load_checkpoint
from kfkit.training.data import epoch_order, row_group_sizes, stream_batches, streamed_moments
from kfkit.training.launcher import torchrun_command, train

# 6,500 training rows in row groups of 1,000; buffers of 1,500 rows straddle row groups on purpose.
PREP = ["dataset=synthetic_fraud", "dataset.n_rows=10000", "data.shard_rows=1000", "data.shuffle_buffer_rows=1500"]


@pytest.fixture(scope="module")
def sharded_prepared(tmp_path_factory) -> Path:
    from kfkit.data.prep import prepare

    cfg = compose(PREP)
    out = tmp_path_factory.mktemp("sharded-prepared")
    prepare(cfg.dataset, out, data=cfg.data)
    assert len(row_group_sizes(out / "train.parquet")) == 7
    return out


@pytest.fixture(scope="module")
def numbered(tmp_path_factory) -> Path:
    """1,037 rows in row groups of 200 (the last short); column ``a`` is the row number."""
    path = tmp_path_factory.mktemp("numbered") / "train.parquet"
    rows = np.arange(1037)
    table = pa.table({"a": rows.astype("float32"), "b": np.sin(rows).astype("float32"), "y": rows % 3 == 0})
    pq.write_table(table, path, row_group_size=200)
    return path


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("buffer_rows", [64, 150, 5000])
def test_streamed_batches_are_the_in_memory_order(numbered, world_size, buffer_rows):
    sizes = row_group_sizes(numbered)
    seen = []
    for rank in range(world_size):
        order = epoch_order(sizes, seed=1, epoch=2, rank=rank, world_size=world_size, buffer_rows=buffer_rows)
        assert len(order) == -(-1037 // world_size)
        seen.append(order)
        for start_step in (0, 5):  # 5: a resumed run skips the batches it trained on
            where = {"seed": 1, "epoch": 2, "rank": rank, "world_size": world_size, "buffer_rows": buffer_rows}
            batches = list(stream_batches(numbered, ["a", "b"], "y", batch_size=16, start_step=start_step, **where))
            assert all(len(x) == 16 for x, _ in batches[:-1])
            streamed = torch.cat([x[:, 0] for x, _ in batches]).long()
            assert torch.equal(streamed, order[start_step * 16 :])
            labels = torch.cat([y for _, y in batches])
            assert torch.equal(labels, (order[start_step * 16 :] % 3 == 0).float())
    assert set(torch.cat(seen).tolist()) == set(range(1037))  # every row, once per epoch (plus padding)


def test_a_rank_reads_only_the_row_groups_its_stretch_covers(numbered):
    for epoch in range(3):
        # Six equal row groups over two ranks: three each, none shared.
        groups = [set((epoch_order([200] * 6, seed=4, epoch=epoch, rank=r, world_size=2, buffer_rows=100) // 200)
                      .tolist()) for r in range(2)]  # fmt: skip
        assert [len(g) for g in groups] == [3, 3] and not groups[0] & groups[1]
        # Uneven ones: a stretch may also touch the row groups at its two ends (and the wrap-around pad).
        uneven = [set((epoch_order(row_group_sizes(numbered), seed=4, epoch=epoch, rank=r, world_size=2,
                                   buffer_rows=100) // 200).tolist()) for r in range(2)]  # fmt: skip
        assert all(len(g) <= 5 for g in uneven) and len(uneven[0] & uneven[1]) <= 2
    orders = [epoch_order([200] * 6, seed=4, epoch=e, rank=0, world_size=2, buffer_rows=100) for e in range(2)]
    assert not torch.equal(orders[0], orders[1])  # row groups and buffers reshuffle every epoch


def test_one_row_group_keeps_the_distributed_sampler_order(numbered, tmp_path):
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(300), num_replicas=2, rank=1, shuffle=True, seed=9)
    sampler.set_epoch(3)
    assert epoch_order([300], seed=9, epoch=3, rank=1, world_size=2, buffer_rows=1000).tolist() == list(sampler)


def test_streamed_statistics_equal_the_in_memory_ones(sharded_prepared):
    from kfkit.data.prep import load_prepared
    from kfkit.training.data import feature_moments, read_split

    prepared = load_prepared(sharded_prepared)
    path = prepared.split_path("train")
    x, _ = read_split(path, prepared.feature_names, prepared.label)
    bounds = np.cumsum([0, *row_group_sizes(path)])
    in_memory = feature_moments(x[a:b] for a, b in itertools.pairwise(bounds))
    streamed = streamed_moments(path, prepared.feature_names)
    assert np.array_equal(in_memory[0], streamed[0]) and np.array_equal(in_memory[1], streamed[1])
    np.testing.assert_allclose(streamed[0], x.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed[1], x.astype(np.float64).std(0, ddof=1), rtol=1e-10)


def _assert_same_model(a: Path, b: Path, summary_a: dict, summary_b: dict) -> None:
    weights_a, weights_b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert weights_a.keys() == weights_b.keys()
    for name, tensor in weights_a.items():
        torch.testing.assert_close(weights_b[name], tensor, rtol=0, atol=1e-6)
    for got, want in zip(summary_b["history"], summary_a["history"], strict=True):
        for key in ("train_loss", "val_loss", "val_pr_auc"):
            assert got[key] == pytest.approx(want[key], abs=1e-6), key


def test_one_rank_streams_to_the_in_memory_weights(sharded_prepared, tmp_path, run_worker):
    common = [*PREP, "training.epochs=2", "training.batch_size=64", "training.device=cpu"]
    status, memory = run_worker(sharded_prepared, tmp_path / "memory", *common, "training.data=memory")
    assert status == 0
    status, streamed = run_worker(sharded_prepared, tmp_path / "stream", *common, "training.data=stream")
    assert status == 0
    _assert_same_model(tmp_path / "memory", tmp_path / "stream", memory, streamed)
    assert streamed["history"][0]["train_loss"] != streamed["history"][1]["train_loss"]


def _kill_a_worker_after_a_checkpoint(prepared: Path, out: Path, config: Path) -> int:
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
        workers = [p for p in psutil.Process(process.pid).children(recursive=True)
                   if "kfkit.training.worker" in p.cmdline()]  # fmt: skip
        assert len(workers) == 2
        workers[-1].send_signal(signal.SIGKILL)
        return process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_two_streaming_ranks_killed_and_resumed_equal_an_in_memory_run(sharded_prepared, tmp_path):
    """2 ranks x 51 steps per epoch (6,500 rows / 2 / 64), a checkpoint every 7 steps, killed mid-epoch."""
    common = [*PREP, "training.device=cpu", "training.nproc=2", "training.epochs=2", "training.batch_size=64",
              "training.checkpoint_every_steps=7", "training.early_stopping_patience=0"]  # fmt: skip
    memory = train(sharded_prepared, compose([*common, "training.data=memory"]), tmp_path / "memory")
    cfg = compose([*common, "training.data=stream"])
    out = tmp_path / "stream"
    config = tmp_path / "stream.config.json"
    config.write_text(json.dumps(to_dict(cfg)))
    assert _kill_a_worker_after_a_checkpoint(sharded_prepared, out, config) != 0
    checkpoint = load_checkpoint(out.with_name("stream.ckpt") / CHECKPOINT_FILE)
    assert checkpoint["global_step"] < 2 * 51
    resumed = train(sharded_prepared, cfg, out)
    assert resumed["resumed_from_step"] == checkpoint["global_step"]
    _assert_same_model(tmp_path / "memory", out, memory, resumed)
