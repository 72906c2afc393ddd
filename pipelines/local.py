"""Run the pipeline on this machine with kfp.local's SubprocessRunner (no cluster, no Docker)."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import sys
import time
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
# "kfkit.errors.DatasetError: …" (module, class, message).
_STEP_ERROR = re.compile(r"^\s*(kfkit(?:\.\w+)+)\.([A-Z]\w*): (.+)$")
_FAILED_TASK = re.compile(r"Inner task failed: '([\w-]+)'")
# kfp.local's own lines around each task (task_dispatcher.py), and a kfkit step's progress lines.
_TASK_START = re.compile(r"Executing task '([\w-]+)'")
_TASK_END = re.compile(r"Task '([\w-]+)' finished with status (\w+)")
_STEP_LINE = re.compile(r"^\s*(\[\w+\] .*)$")
# One line per epoch: all of them go to the log, one every few seconds to the screen.
_EPOCH_LINE = re.compile(r"^\[train\] epoch ")
_EPOCH_EVERY_S = 5.0


class _StepLog:
    """Where kfp.local's output goes: all of it to the run's log file, a short account of it to the screen.

    kfp.local echoes every step's executor input (the whole config, once per step) and output. By default
    the screen gets one line per kfkit progress message (``[prep] …``; training's epoch lines at most one
    every few seconds) and one per finished step with its time; ``verbose`` echoes everything, as kfp.local
    prints it. Either way the last kfkit error a step reports is kept, so a failure ends with the step's own
    one-line reason.
    """

    def __init__(self, screen: TextIO, log: TextIO, *, verbose: bool) -> None:
        self._screen = screen
        self._log = log
        self._verbose = verbose
        self._partial = ""
        self._started: dict[str, float] = {}
        self._epoch_shown = 0.0
        self.last_error: tuple[type[errors.KfkitError], str] | None = None

    def write(self, text: str) -> int:
        self._log.write(text)
        if self._verbose:
            self._screen.write(text)
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            self._line(_ANSI.sub("", line))
        return len(text)

    def _line(self, line: str) -> None:
        if (match := _STEP_ERROR.match(line)) and (cls := _error_class(*match.group(1, 2))):
            self.last_error = (cls, match.group(3).strip())
        if self._verbose:
            return
        if match := _TASK_START.search(line):
            self._started[match.group(1)] = time.monotonic()
        elif match := _TASK_END.search(line):
            step, status = match.groups()
            seconds = time.monotonic() - self._started.get(step, time.monotonic())
            mark = "done" if status == "SUCCESS" else status.lower()
            self._screen.write(f"  {step:<12} {mark} in {seconds:.1f} s\n")
            self._screen.flush()
        elif match := _STEP_LINE.match(line):
            if _EPOCH_LINE.match(match.group(1)):
                if time.monotonic() - self._epoch_shown < _EPOCH_EVERY_S:
                    return
                self._epoch_shown = time.monotonic()
            self._screen.write(f"  {match.group(1)}\n")
            self._screen.flush()

    def flush(self) -> None:
        self._log.flush()
        self._screen.flush()

    def __getattr__(self, name: str):  # isatty, encoding ... of the screen
        return getattr(self._screen, name)


def _error_class(module: str, name: str) -> type[errors.KfkitError] | None:
    """The kfkit error class a traceback line names, or None if it names none."""
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return cls if isinstance(cls, type) and issubclass(cls, errors.KfkitError) else None


def run_local(cfg: KfkitConfig, *, verbose: bool = False) -> dict:
    """Run every step in subprocesses of this Python environment and return the run summary.

    Task outputs land under ``<work_dir>/pipeline_root/<run>/<task>/``, and everything the steps printed
    in ``<work_dir>/pipeline_root/<run>/pipeline.log`` (the summary's ``files.run_log``). The model server
    that deploy starts keeps running after this returns; stop it with ``kfkit.deploy.local.stop_server``.

    Args:
        cfg: The composed config.
        verbose: Echo every step's output as kfp.local prints it, instead of one line per step.

    Raises:
        KfkitError: a step failed with a kfkit error; the same error class and message, naming the step
            and the log file.
        PipelineError: a step failed otherwise; the message names the log file that says why.
    """
    from kfp import local

    from kfkit.pipelines.parameters import pipeline_arguments
    from kfkit.pipelines.training_pipeline import training_pipeline

    work_dir = Path(cfg.work_dir).resolve()
    pipeline_root = work_dir / "pipeline_root"
    # Steps and the model server they start are subprocesses: an S3 registry's endpoint and region reach
    # them (and the server's registry download) the way KServe's storage initializer gets them, as env.
    for var, value in (("AWS_ENDPOINT_URL", cfg.registry.endpoint), ("AWS_REGION", cfg.registry.region)):
        if value:
            os.environ[var] = value
    # use_venv=False: steps run in this interpreter, which already has kfkit and its pinned dependencies.
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root))
    (work_dir / "logs").mkdir(parents=True, exist_ok=True)
    log_path = work_dir / "logs" / f"pipeline-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    started = time.time()
    with open(log_path, "w", encoding="utf-8") as log:
        tap = _StepLog(sys.stdout, log, verbose=verbose)
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(tap):
                # kfp warns that the kfkit image has no "python" in its name; the subprocess runner ignores images.
                warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
                task = training_pipeline(**pipeline_arguments(cfg))
        except RuntimeError as e:
            log.close()
            log_path = _into_run_folder(log_path, pipeline_root, started)
            reason = _ANSI.sub("", str(e))
            step = match.group(1) if (match := _FAILED_TASK.search(reason)) else "a step"
            if tap.last_error is not None:
                error_class, message = tap.last_error
                raise error_class(f"step {step} failed: {message} (full log: {log_path})") from e
            raise PipelineError(f"step {step} failed; {log_path} says why ({reason})") from e
    summary = json.loads(Path(task.output.path).read_text())
    summary.setdefault("files", {})["run_log"] = str(_into_run_folder(log_path, pipeline_root, started))
    return summary


def _into_run_folder(log_path: Path, pipeline_root: Path, started: float) -> Path:
    """Move the log beside the run's outputs (kfp.local names the run folder); where it is if none."""
    runs = [p for p in pipeline_root.glob("*") if p.is_dir() and p.stat().st_mtime >= started - 1]
    if not runs:
        return log_path
    target = max(runs, key=lambda p: p.stat().st_mtime) / "pipeline.log"
    try:
        os.replace(log_path, target)
    except OSError:
        return log_path
    return target
