"""Resumable training checkpoints: written atomically, read back without unpickling arbitrary objects.

A checkpoint is one ``torch.save`` of a dict holding only tensors and primitives (model, optimizer,
scheduler and loss-scaler state dicts, the epoch and step reached, early-stopping state, and every
rank's random number generator states), so :func:`load_checkpoint` can use ``weights_only=True``. Its
fingerprint (:func:`run_fingerprint`) says which run it continues; another run refuses it.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import TrainingError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "checkpoint_dir",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "run_fingerprint",
    "check_fingerprint",
]

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def checkpoint_dir(configured: str | None, out_dir: str | Path) -> Path:
    """``training.checkpoint_dir``, or ``<out_dir>.ckpt`` beside the model folder.

    Beside, not inside: the model folder is published file by file, and checkpoints are not part of
    a release.
    """
    if configured:
        return Path(configured).expanduser()
    out = Path(out_dir)
    return out.with_name(f"{out.name}.ckpt")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then ``os.replace``.

    A run killed while writing leaves the previous checkpoint whole.
    """
    import torch

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """Read a checkpoint written by :func:`save_checkpoint`; None when there is none.

    Raises:
        TrainingError: the file is not a kfkit checkpoint of this format (or holds anything but
            tensors and primitives).
    """
    import pickle

    import torch

    source = Path(path)
    if not source.is_file():
        return None
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as e:
        raise TrainingError(
            f"{source} cannot be read as a kfkit checkpoint ({e}); delete it to train from scratch"
        ) from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(
            f"{source} is not a kfkit checkpoint of format {CHECKPOINT_FORMAT}; delete it to train from scratch"
        )
    return state


def rng_state(device: str) -> dict[str, Any]:
    """This process's random number generator states (torch CPU and CUDA, numpy, Python) as tensors/primitives."""
    import numpy as np
    import torch

    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch_cpu": torch.get_rng_state(),
        # Only on a CUDA run: asking for a CUDA state on the CPU path would initialise CUDA.
        "torch_cuda": torch.cuda.get_rng_state(device) if device.startswith("cuda") else None,
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: dict[str, Any], device: str) -> None:
    """Restore what :func:`rng_state` returned."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch_cpu"])
    if device.startswith("cuda") and state.get("torch_cuda") is not None:
        torch.cuda.set_rng_state(state["torch_cuda"], device)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss_next"]))


def run_fingerprint(
    cfg: KfkitConfig,
    *,
    world_size: int,
    precision: str,
    rows: int,
    features: list[str],
    order: dict[str, Any] | None = None,
) -> dict:
    """What must match for a checkpoint to continue this run exactly (log and timeout settings need not).

    ``order`` holds what the epoch order depends on besides the seed (the split's row groups and the
    shuffle buffer): not training.data, since memory and stream share one order and a run may resume
    in the other mode.
    """
    t = cfg.training
    return {
        **({"order": order} if order is not None else {}),
        "world_size": world_size,
        "rows": rows,
        "features": list(features),
        "hidden_dims": list(cfg.model.hidden_dims),
        "dropout": cfg.model.dropout,
        "precision": precision,
        **{k: getattr(t, k) for k in ("epochs", "batch_size", "learning_rate", "weight_decay", "pos_weight", "seed")},
        "early_stopping_patience": t.early_stopping_patience,
    }


def check_fingerprint(checkpoint: dict[str, Any], fingerprint: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint written by a run that differs from this one in anything :func:`run_fingerprint` holds.

    Raises:
        TrainingError: the fingerprints differ; the message names each difference.
    """
    found = checkpoint.get("fingerprint", {})
    differ = {k: (found.get(k), v) for k, v in fingerprint.items() if found.get(k) != v}
    if differ:
        detail = ", ".join(f"{k}: checkpoint {_short(old)} vs now {_short(new)}" for k, (old, new) in differ.items())
        raise TrainingError(
            f"{path} was written by a different training run ({detail}); delete it to train from scratch, "
            "or set training.checkpoint_dir to another folder"
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
