"""Run the pipeline on this machine with kfp.local's SubprocessRunner (no cluster, no Docker)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from kfkit import errors
from kfkit.errors import PipelineError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["run_local"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The last line of a step's traceback when a kfkit error stopped it, as kfp.local echoes it:
# "kfkit.errors.DatasetError: …", "kfkit.gate.GateFailed: …" (module, class, message).
_STEP_ERROR = re.compile(r"^\s*(kfkit(?:\.\w+)+)\.([A-Z]\w*): (.+)$")
_FAILED_TASK = re.compile(r"Inner task failed: '([\w-]+)'")


class _ErrorTap:
    """Passes a step's output through unchanged and remembers the last kfkit error it reports.

    kfp.local echoes each step's output with ``print``; when a step fails, the user should get the
    step's own one-line reason at the end, not only "task failed" after a page of logs.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._partial = ""
        self.last_error: tuple[type[errors.KfkitError], str] | None = None

    def write(self, text: str) -> int:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if (match := _STEP_ERROR.match(_ANSI.sub("", line))) and (cls := _error_class(*match.group(1, 2))):
                self.last_error = (cls, match.group(3).strip())
        return self._stream.write(text)

    def __getattr__(self, name: str):  # flush, isatty, encoding ... of the real stream
        return getattr(self._stream, name)


def _error_class(module: str, name: str) -> type[errors.KfkitError] | None:
    """The kfkit error class a traceback line names, or None if it names none."""
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, errors.KfkitError) else None


def run_local(cfg: KfkitConfig) -> dict:
    """Run every step in subprocesses of this Python environment and return the run summary.

    Task outputs land under ``<work_dir>/pipeline_root/<run>/<task>/``. The model server that
    deploy starts keeps running after this returns; stop it with ``kfkit.deploy.local.stop_server``.

    Raises:
        KfkitError: a step failed with a kfkit error; the same error class and message, naming the step.
        PipelineError: a step failed otherwise; its output above says why.
    """
    from kfp import local

    from kfkit.config import to_dict
    from kfkit.pipelines.training_pipeline import training_pipeline

    work_dir = Path(cfg.work_dir).resolve()
    # Steps and the model server they start are subprocesses: an S3 registry's endpoint and region reach
    # them (and the server's registry download) the way KServe's storage initializer gets them, as env.
    for var, value in (("AWS_ENDPOINT_URL", cfg.registry.endpoint), ("AWS_REGION", cfg.registry.region)):
        if value:
            os.environ[var] = value
    # use_venv=False: steps run in this interpreter, which already has kfkit and its pinned dependencies.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(work_dir / "pipeline_root"))
    tap = _ErrorTap(sys.stdout)
    with warnings.catch_warnings(), contextlib.redirect_stdout(tap):
        # kfp warns that the kfkit image name has no "python" in it; the subprocess runner ignores images.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
        try:
            task = training_pipeline(config=to_dict(cfg))
        except RuntimeError as e:
            reason = _ANSI.sub("", str(e))
            step = match.group(1) if (match := _FAILED_TASK.search(reason)) else "a step"
            if tap.last_error is not None:
                error_class, message = tap.last_error
                raise error_class(f"step {step} failed: {message}") from e
            raise PipelineError(f"step {step} failed; its output above says why ({reason})") from e
    return json.loads(Path(task.output.path).read_text())
