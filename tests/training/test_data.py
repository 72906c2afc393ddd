"""Worker input: per-epoch shards equal DistributedSampler's, built without per-row Python."""

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler

from kfkit.training.data import epoch_indices, load_split, shard_size


@pytest.mark.parametrize(("rows", "world_size"), [(10, 1), (10, 2), (10, 3), (7, 4), (2, 5), (1000, 2)])
def test_shards_equal_distributed_sampler(rows, world_size):
    for epoch in (0, 3):
        for rank in range(world_size):
            sampler = DistributedSampler(range(rows), num_replicas=world_size, rank=rank, shuffle=True, seed=7)
            sampler.set_epoch(epoch)
            ours = epoch_indices(rows, seed=7, epoch=epoch, rank=rank, world_size=world_size)
            assert ours.tolist() == list(sampler)
            assert ours.dtype == torch.int64
            assert len(ours) == shard_size(rows, world_size)


def test_shards_cover_every_row_and_reshuffle_per_epoch():
    shards = [epoch_indices(1001, seed=1, epoch=0, rank=r, world_size=2) for r in range(2)]
    assert set(torch.cat(shards).tolist()) == set(range(1001))
    assert len(shards[0]) == len(shards[1]) == 501  # padded: both ranks run the same number of steps
    again = epoch_indices(1001, seed=1, epoch=0, rank=0, world_size=2)
    assert torch.equal(again, shards[0])  # a function of (seed, epoch) alone: a resumed run replays it
    assert not torch.equal(epoch_indices(1001, seed=1, epoch=1, rank=0, world_size=2), shards[0])


def test_split_loads_as_float_tensors_on_the_cpu(bc_prepared):
    from kfkit.data.prep import load_prepared

    prepared = load_prepared(bc_prepared)
    x, y = load_split(prepared.split_path("val"), prepared.feature_names, prepared.label, "cpu")
    assert x.shape == (prepared.rows["val"], 30) and y.shape == (prepared.rows["val"],)
    assert x.dtype == y.dtype == torch.float32
    assert int(y.sum()) == prepared.positives["val"]
    assert not x.is_pinned()  # pinning is for CUDA runs only
