"""One torchrun worker: DDP training of the tabular MLP on a prepared dataset.

Started by :mod:`kfkit.training.launcher` as ``python -m torch.distributed.run ... -m kfkit.training.worker``;
rank, world size and local rank come from torchrun's environment. Rank 0 alone writes the model.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

__all__ = ["main", "TRAINING_SUMMARY_FILE"]

TRAINING_SUMMARY_FILE = "training.json"


def _device_and_backend(device_choice: str, backend_choice: str) -> tuple[str, str]:
    import torch

    device = device_choice
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = backend_choice if backend_choice != "auto" else ("nccl" if device == "cuda" else "gloo")
    return device, backend


def _load_split(path: Path, features: list[str], label: str, device: str):
    """A whole split as two tensors, loaded once: batches are then index slices, not per-row Python."""
    import pandas as pd
    import torch

    frame = pd.read_parquet(path, columns=[*features, label])
    x = torch.from_numpy(frame[features].to_numpy(dtype="float32"))
    y = torch.from_numpy(frame[label].to_numpy(dtype="float32"))
    if device == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def main(argv: list[str] | None = None) -> int:
    """Train on ``--prepared`` with ``--config`` (a kfkit config JSON) and write the model to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="folder written by the prep step")
    parser.add_argument("--config", required=True, help="kfkit config as a JSON file")
    parser.add_argument("--out", required=True, help="folder for model.safetensors, model.json, training.json")
    args = parser.parse_args(argv)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    from kfkit.config import from_dict
    from kfkit.data.prep import load_prepared
    from kfkit.model import ModelSpec, build_model, save_model

    cfg = from_dict(json.loads(Path(args.config).read_text()))
    train_cfg = cfg.training
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device, backend = _device_and_backend(train_cfg.device, train_cfg.backend)
    if device == "cuda":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    distributed = world_size > 1
    if distributed:
        dist.init_process_group(backend=backend)
    torch.manual_seed(train_cfg.seed)

    prepared = load_prepared(args.prepared)
    features, label = prepared.feature_names, prepared.label
    x_train, y_train = _load_split(prepared.split_path("train"), features, label, device)
    x_val, y_val = _load_split(prepared.split_path("val"), features, label, device)

    spec = ModelSpec(
        name=cfg.model.name,
        feature_names=features,
        hidden_dims=list(cfg.model.hidden_dims),
        dropout=cfg.model.dropout,
        threshold=cfg.evaluation.threshold,
        label=label,
        extra={"dataset": cfg.dataset.kind, "epochs": train_cfg.epochs, "world_size": world_size},
    )
    model = build_model(spec).to(device)
    # Standardise with training-split statistics (every rank holds the full split, so all agree).
    model.feature_mean.copy_(x_train.mean(0))
    model.feature_std.copy_(x_train.std(0).clamp_min(1e-6))
    ddp_model = DistributedDataParallel(model) if distributed else model

    positives = float(y_train.sum())
    pos_weight = train_cfg.pos_weight or max(1.0, (len(y_train) - positives) / max(positives, 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    optimizer = torch.optim.AdamW(
        ddp_model.parameters(), lr=train_cfg.learning_rate, weight_decay=train_cfg.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train_cfg.epochs)
    # The sampler gives each rank its own shard, reshuffled per epoch by set_epoch; all ranks see
    # the same number of batches, so DDP's all-reduce never waits on a rank that has run out.
    sampler = DistributedSampler(
        range(len(y_train)), num_replicas=world_size, rank=rank, shuffle=True, seed=train_cfg.seed, drop_last=False
    )
    history: list[dict] = []
    start = time.perf_counter()
    for epoch in range(train_cfg.epochs):
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), device=device)
        ddp_model.train()
        epoch_start, loss_sum, seen = time.perf_counter(), torch.zeros((), device=device), 0
        for begin in range(0, len(order), train_cfg.batch_size):
            index = order[begin : begin + train_cfg.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(ddp_model(x_train[index]), y_train[index])
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(index)
            seen += len(index)
        scheduler.step()
        totals = torch.stack([loss_sum, torch.tensor(float(seen), device=device)])
        if distributed:
            dist.all_reduce(totals)
        elapsed = time.perf_counter() - epoch_start
        ddp_model.eval()
        with torch.inference_mode():
            val_loss = float(loss_fn(model(x_val), y_val))
        record = {
            "epoch": epoch + 1,
            "train_loss": float(totals[0] / totals[1]),
            "val_loss": val_loss,
            "samples_per_s": float(totals[1]) / max(elapsed, 1e-9),
        }
        history.append(record)
        last = epoch + 1 == train_cfg.epochs
        if rank == 0 and (last or (epoch + 1) % max(1, train_cfg.log_every) == 0 or epoch == 0):
            print(
                f"[train] epoch {epoch + 1:>3}/{train_cfg.epochs}  train_loss {record['train_loss']:.4f}  "
                f"val_loss {val_loss:.4f}  {record['samples_per_s']:,.0f} samples/s ({world_size} proc, {backend})",
                flush=True,
            )
    if rank == 0:
        out = save_model(model.cpu(), spec, args.out)
        summary = {
            "world_size": world_size,
            "backend": backend,
            "device": device,
            "pos_weight": pos_weight,
            "seconds": time.perf_counter() - start,
            "history": history,
        }
        (out / TRAINING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    if distributed:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
