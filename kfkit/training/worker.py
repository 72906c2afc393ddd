"""One torchrun worker: the process torchrun starts per rank, training with :class:`~kfkit.training.ddp.DDPTrainer`.

Started by :mod:`kfkit.training.launcher` as ``python -m torch.distributed.run ... -m kfkit.training.worker``;
rank, world size and local rank come from torchrun's environment. A failure the worker can explain (a
:class:`~kfkit.errors.KfkitError`) is written to :data:`ERROR_FILE` for the launcher to raise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from kfkit.errors import KfkitError
from kfkit.training.outputs import ERROR_FILE

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Train on ``--prepared`` with ``--config`` (a kfkit config JSON) and write the model to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prepared", required=True, help="folder written by the prep step")
    parser.add_argument("--config", required=True, help="kfkit config as a JSON file")
    parser.add_argument("--out", required=True, help="folder for model.safetensors, model.json, training.json")
    args = parser.parse_args(argv)
    try:
        from kfkit.config import from_dict
        from kfkit.training.ddp import DDPTrainer

        cfg = from_dict(json.loads(Path(args.config).read_text()))
        DDPTrainer(cfg, Path(args.prepared), Path(args.out)).run()
    except KfkitError as e:
        # A failure we can explain: say it once, plainly, and leave it for the launcher.
        print(f"[train] rank {os.environ.get('RANK', 0)}: {e}", file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / ERROR_FILE).write_text(str(e) + "\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
