"""Start a retraining run and follow it to the gate's decision: ``kfkit run --no-serve`` here, or a KFP run.

The run is the whole pipeline with the dataset's newest data (:func:`newest_data_overrides`), so the gate
still decides: a candidate that fails it is neither published nor promoted, and production stays as it was.
Each launcher runs one run at a time on a thread and reports a finished :class:`RunRecord` to a callback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import KfkitError
from kfkit.retrain.audit import utc_now

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = [
    "RunRecord",
    "LocalLauncher",
    "KfpLauncher",
    "newest_data_overrides",
    "hydra_quote",
    "production_version",
    "FINAL_STATES",
]

FINAL_STATES = ("promoted", "published", "gate_failed", "failed", "stopped", "dry_run")
"""How a run ends: promoted (gate passed, the alias moved), published (gate passed, no alias to move),
gate_failed (production unchanged), failed (the run broke), stopped (the trigger was stopped), dry_run."""
_KFP_DONE = {"SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"}

Done = Callable[["RunRecord"], None]


@dataclass
class RunRecord:
    """One retraining run the trigger started, and how it ended."""

    run: int
    """Run number (1, 2, ...) of this trigger."""
    reason: str
    """Why it was started (the firing decision's reason)."""
    decision: dict[str, Any]
    """The decision that started it: event, window, drifted windows and features."""
    mode: str = "local"
    """local (kfkit run --no-serve here) or kfp (a Kubeflow Pipelines run)."""
    state: str = "running"
    """running, or one of :data:`FINAL_STATES`."""
    started: str = field(default_factory=utc_now)
    finished: str | None = None
    production_before: str | None = None
    """Version the production alias pointed at when the run started."""
    production_after: str | None = None
    """Version it points at after the run."""
    version: str | None = None
    """Version the run published (None when the gate said no)."""
    gate: str = ""
    """The gate's verdict in one line (or why the run failed)."""
    log: str | None = None
    """The run's log file (local) or its KFP run URL."""
    kfp_run_id: str | None = None
    command: list[str] | None = None
    """The command line of a local run."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return dataclasses.asdict(self)


def hydra_quote(text: str) -> str:
    """``text`` as a quoted Hydra override value (any characters survive the override grammar)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def newest_data_overrides(cfg: KfkitConfig) -> list[str]:
    """Overrides that point a retrain run at the dataset's newest data, then ``retrain.overrides``.

    synthetic_fraud: ``dataset.drift=retrain.synthetic_drift`` (the shifted distribution); csv:
    ``dataset.path=retrain.dataset_path`` (None: the run's path is read again); breast_cancer has no newer
    rows and trains on the same ones.
    """
    overrides = []
    if cfg.dataset.kind == "synthetic_fraud" and cfg.retrain.synthetic_drift is not None:
        overrides.append(f"dataset.drift={cfg.retrain.synthetic_drift!r}")
    if cfg.dataset.kind == "csv" and cfg.retrain.dataset_path:
        overrides.append(f"dataset.path={hydra_quote(str(Path(cfg.retrain.dataset_path).expanduser().resolve()))}")
    return overrides + list(cfg.retrain.overrides)


def production_version(cfg: KfkitConfig) -> str | None:
    """The version the promote alias (registry.promote_to, else production) points at; None if none or unreadable."""
    from kfkit.registry import open_registry

    alias = cfg.registry.promote_to or cfg.gate.champion_alias
    try:
        registry = open_registry(cfg.registry.uri, endpoint=cfg.registry.endpoint, region=cfg.registry.region)
        return registry.aliases(cfg.model.name).get(alias)
    except (KfkitError, OSError):
        return None


class LocalLauncher:
    """Runs ``python -m kfkit.cli run --no-serve`` with the trigger's overrides plus the newest data.

    The run serves its smoke test on free ports and sends no payloads to the detector; its exit status is
    the gate's answer: 0 passed (published, promoted), 3 rejected (nothing published), else a failure.
    """

    mode = "local"

    def __init__(
        self, cfg: KfkitConfig, overrides: list[str], state_dir: Path, *, command: list[str] | None = None
    ) -> None:
        """Launch runs of ``cfg`` (composed from ``overrides``), logging under ``state_dir``/runs.

        Args:
            cfg: The trigger's config.
            overrides: The overrides it was composed from (the retrain run starts from the same ones).
            state_dir: Where run logs and summaries go.
            command: The command that runs the pipeline (default ``python -m kfkit.cli run --no-serve``).
        """
        self.cfg = cfg
        self.overrides = list(overrides)
        self.runs_dir = Path(state_dir) / "runs"
        self.command = command or [sys.executable, "-m", "kfkit.cli", "run", "--no-serve"]
        self._process: subprocess.Popen | None = None
        self._stopping = threading.Event()

    def start(self, record: RunRecord, done: Done) -> None:
        """Start the run for ``record`` on a thread; ``done(record)`` is called once it has ended."""
        from kfkit.deploy.local import free_port

        host = self.cfg.serving.host
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        log = self.runs_dir / f"run-{record.run}.log"
        summary = self.runs_dir / f"run-{record.run}.json"
        command = [*self.command, "--summary-json", str(summary), *self.overrides, *newest_data_overrides(self.cfg)]
        command += [f"serving.http_port={free_port(host)}", f"serving.grpc_port={free_port(host)}"]
        command += ["serving.payload_log_url=null", f"retrain.reason={hydra_quote(record.reason)}"]
        record.command, record.log = command, str(log)
        record.production_before = production_version(self.cfg)
        threading.Thread(
            target=self._run, args=(record, log, summary, done), name=f"retrain-{record.run}", daemon=True
        ).start()

    def _run(self, record: RunRecord, log: Path, summary: Path, done: Done) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "KFKIT_ACTOR": os.environ.get("KFKIT_ACTOR", "kfkit-retrain")}
        try:
            with open(log, "ab") as out:
                out.write(f"# retrain run {record.run}: {record.reason}\n".encode())
                out.flush()
                # Own session: a stop signals the run and every step it started, and nothing else.
                self._process = subprocess.Popen(
                    record.command or [],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
                code = self._wait(self._process, self.cfg.retrain.timeout_s)
        except OSError as e:
            code = None
            record.gate = f"could not start the run: {e}"
        finally:
            self._process = None
        if code == 0:
            self._passed(record, summary)
        elif code == 3:
            record.state = "gate_failed"
            record.gate = _last_error(log) or "the gate rejected the candidate; nothing was published"
        elif self._stopping.is_set():
            record.state, record.gate = "stopped", "the trigger was stopped while the run was going"
        else:
            record.state = "failed"
            if code == -1:
                record.gate = f"stopped after retrain.timeout_s={self.cfg.retrain.timeout_s:g} s"
            elif code is not None:
                record.gate = _last_error(log) or f"kfkit run exited with status {code}; see {log}"
        record.production_after = production_version(self.cfg)
        record.finished = utc_now()
        done(record)

    def _passed(self, record: RunRecord, summary: Path) -> None:
        try:
            result = json.loads(summary.read_text())
        except (OSError, ValueError):
            result = {}
        record.version = str(result["version"]) if "version" in result else None
        gate = result.get("gate") or {}
        against = f", not worse than {gate['champion']}" if gate.get("champion") else ""
        record.gate = f"gate passed {gate.get('checks', 0)} checks{against}" if gate else "gate passed"
        record.state = "promoted" if result.get("promoted_to") else "published"

    def _wait(self, process: subprocess.Popen, timeout_s: float) -> int:
        """The exit status, or -1 after stopping a run that outlived ``timeout_s``."""
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_group(process)
            return -1

    def stop(self) -> None:
        """Stop a run in progress (SIGINT first: kfkit run then stops the smoke-test server it started)."""
        self._stopping.set()
        process = self._process
        if process is not None:
            _stop_group(process)


class KfpLauncher:
    """Starts the pipeline on Kubeflow Pipelines through ``kfp.Client`` and follows the run to its end.

    The run's ``config`` parameter is the trigger's config with the newest data and ``retrain.reason`` set,
    so the reason is a run parameter and travels into every step. Either kfkit's pipeline is compiled from
    that config (``create_run_from_pipeline_package``) or an uploaded one is run (``run_pipeline`` with
    ``retrain.kfp_pipeline_id`` and ``kfp_version_id``).
    """

    mode = "kfp"

    def __init__(self, cfg: KfkitConfig, overrides: list[str], state_dir: Path, *, client: Any = None) -> None:
        """Launch runs of ``cfg`` on ``retrain.kfp_host``.

        Args:
            cfg: The trigger's config.
            overrides: The overrides it was composed from.
            state_dir: Where compiled packages go.
            client: A ``kfp.Client`` to use (default: one for ``retrain.kfp_host``, built on first use).
        """
        self.cfg = cfg
        self.overrides = list(overrides)
        self.runs_dir = Path(state_dir) / "runs"
        self._client = client
        self._stopping = threading.Event()

    def client(self) -> Any:
        """The ``kfp.Client``, with kfkit's one auth (:mod:`kfkit.kubeflow.client`, ``kubeflow.auth``).

        auto: ``kubeflow.token_file``, else $KFKIT_KFP_TOKEN as a bearer token, else the pod's projected token.
        """
        if self._client is None:
            from kfkit.kubeflow.client import KfpTarget, connect

            retrain = self.cfg.retrain
            target = KfpTarget.from_config(self.cfg, host=retrain.kfp_host, namespace=retrain.kfp_namespace)
            self._client = connect(target)
        return self._client

    def start(self, record: RunRecord, done: Done) -> None:
        """Submit the run and follow it, on a thread (compiling and submitting take seconds); errors are recorded."""
        record.mode = "kfp"
        record.production_before = production_version(self.cfg)
        threading.Thread(target=self._run, args=(record, done), name=f"retrain-{record.run}", daemon=True).start()

    def _run(self, record: RunRecord, done: Done) -> None:
        try:
            self._submit(record)
        except Exception as e:  # kfp and its HTTP client raise many kinds: record, never crash the trigger
            record.state, record.gate, record.finished = "failed", f"could not start the KFP run: {e}", utc_now()
            record.production_after = record.production_before
            done(record)
            return
        self._follow(record, done)

    def _submit(self, record: RunRecord) -> None:
        from kfkit.config import compose
        from kfkit.pipelines.parameters import retrain_arguments

        retrain = self.cfg.retrain
        cfg = compose([*self.overrides, *newest_data_overrides(self.cfg)])
        arguments = retrain_arguments(cfg, record.reason)
        namespace = retrain.kfp_namespace or self.cfg.kubeflow.namespace  # explicit on every call
        name = f"retrain-{cfg.model.name}-{record.run}-{time.strftime('%Y%m%d-%H%M%S')}"
        client = self.client()
        with contextlib.redirect_stdout(sys.stderr):  # kfp prints "Run details: <link>"; keep stdout for us
            if retrain.kfp_pipeline_id:
                experiment = client.create_experiment(name=retrain.kfp_experiment, namespace=namespace)
                run = client.run_pipeline(
                    experiment_id=experiment.experiment_id,
                    job_name=name,
                    params=arguments,
                    pipeline_id=retrain.kfp_pipeline_id,
                    version_id=retrain.kfp_version_id,
                    service_account=self.cfg.kubeflow.service_account,
                )
                record.kfp_run_id = run.run_id
            else:
                from kfkit.pipelines.compile import compile_pipeline

                # The same pipeline definition as every other run, its pods set up from the same config.
                package = compile_pipeline(self.runs_dir / f"run-{record.run}.yaml", arguments["config"])
                result = client.create_run_from_pipeline_package(
                    str(package),
                    arguments=arguments,
                    run_name=name,
                    experiment_name=retrain.kfp_experiment,
                    namespace=namespace,
                    service_account=self.cfg.kubeflow.service_account,
                )
                record.kfp_run_id = result.run_id
        record.log = f"{retrain.kfp_host.rstrip('/')}/#/runs/details/{record.kfp_run_id}"

    def _follow(self, record: RunRecord, done: Done) -> None:
        retrain = self.cfg.retrain
        deadline = time.monotonic() + retrain.timeout_s
        run, problem = None, ""
        while not self._stopping.is_set() and time.monotonic() < deadline:
            try:
                run = self.client().get_run(record.kfp_run_id)
                problem = ""
            except Exception as e:
                problem = f"; last read failed: {e}"
            if run is not None and str(run.state or "").upper() in _KFP_DONE:
                break
            self._stopping.wait(retrain.kfp_poll_s)
        state = str(getattr(run, "state", "") or "").upper()
        if state == "SUCCEEDED":
            record.production_after = production_version(self.cfg)
            moved = record.production_after not in (None, record.production_before)
            record.state, record.version = ("promoted", record.production_after) if moved else ("published", None)
            record.gate = "gate passed (the KFP run succeeded)"
        elif state == "FAILED" and (gate := _failed_task(run, "gate")) is not None:
            record.state, record.gate = "gate_failed", gate or "the gate step failed; nothing was published"
        elif self._stopping.is_set():
            record.state, record.gate = "stopped", "the trigger was stopped while following the run"
        else:
            record.state = "failed"
            error = getattr(getattr(run, "error", None), "message", None) or ""
            record.gate = f"KFP run {record.kfp_run_id} ended {state or 'in no final state in time'}{problem}"
            record.gate += f": {error}" if error else ""
        if record.production_after is None:
            record.production_after = production_version(self.cfg)
        record.finished = utc_now()
        done(record)

    def stop(self) -> None:
        """Stop following (the KFP run itself goes on; the cluster owns it)."""
        self._stopping.set()


def _failed_task(run: Any, name: str) -> str | None:
    """The error message of the failed task ``name`` of a KFP run ('' if it has none); None if it did not fail."""
    details = getattr(run, "run_details", None)
    for task in getattr(details, "task_details", None) or []:
        if getattr(task, "display_name", None) == name and str(getattr(task, "state", "")).upper() == "FAILED":
            return str(getattr(getattr(task, "error", None), "message", None) or "")
    return None


def _last_error(log: Path) -> str:
    """The one-line reason kfkit run ends a failure with ("kfkit run: error: ..."), without the prefix."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.startswith("kfkit run: error: "):
            return line.removeprefix("kfkit run: error: ").strip()
    return ""


def _stop_group(process: subprocess.Popen) -> None:
    """SIGINT the run's process group (kfkit run cleans up on it), then SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGINT, 20.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait_s)
            return
