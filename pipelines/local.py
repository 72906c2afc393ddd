"""Run the pipeline on this machine with kfp.local's SubprocessRunner (no cluster, no Docker)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import PipelineError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["run_local"]


def run_local(cfg: KfkitConfig) -> dict:
    """Run every step in subprocesses of this Python environment and return the run summary.

    Task outputs land under ``<work_dir>/pipeline_root/<run>/<task>/``. The model server that
    deploy starts keeps running after this returns; stop it with ``kfkit.serving.local.stop_server``.

    Raises:
        PipelineError: a step failed; its output above says why.
    """
    from kfp import local

    from kfkit.config import to_dict
    from kfkit.pipelines.training_pipeline import training_pipeline

    work_dir = Path(cfg.work_dir).resolve()
    # use_venv=False: steps run in this interpreter, which already has kfkit and its pinned dependencies.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir / "pipeline_root"))
    with warnings.catch_warnings():
        # kfp warns that the kfkit image name has no "python" in it; the subprocess runner ignores images.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        try:
            task = training_pipeline(config=to_dict(cfg))
        except RuntimeError as e:
            raise PipelineError(f"pipeline failed: {e}") from e
    return json.loads(Path(task.output.path).read_text())
