"""``kfkit run``'s drift loop: the detector and the retrain trigger beside the predictor, following production.

:meth:`DriftLoop.prepare` (before the pipeline runs) checks the drift environment and the ports and points
the predictor's payload logger at the detector; :meth:`DriftLoop.start` (once the model serves) starts the
detector (``.venv-drift/bin/python -m kfkit.serving.drift``) and the trigger (``python -m kfkit.retrain``)
as background processes; :meth:`DriftLoop.tick`, called while serving, moves the predictor and the detector
to the new version when the promote alias moves (a retrain that passed the gate, or a ``kfkit registry
promote``/``rollback``); :meth:`DriftLoop.stop` stops both. ``<work_dir>/drift/loop.json`` tells ``kfkit
drift simulate`` and ``kfkit drift status`` where everything is.

A little over 400 lines: the detector and trigger processes, their ports and the promoted version they
follow are one lifecycle, started and stopped together with ``kfkit run``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import KfkitError, ServingError
from kfkit.retrain.audit import utc_now
from kfkit.retrain.policy import check_retrain

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig
    from kfkit.deploy.local import LocalEndpoint

__all__ = ["DriftLoop", "LOOP_FILE", "loop_file", "read_loop", "drift_python"]

LOOP_FILE = "loop.json"
_DETECTOR_MODULE = "kfkit.serving.drift"
_FOLLOW_EVERY_S = 2.0


def loop_file(work_dir: str | Path) -> Path:
    """``<work_dir>/drift/loop.json``: where a serving ``kfkit run`` says its predictor, detector and trigger are."""
    return Path(work_dir).expanduser().resolve() / "drift" / LOOP_FILE


def read_loop(work_dir: str | Path) -> dict[str, Any] | None:
    """The live loop's description, or None when no ``kfkit run`` is serving from ``work_dir``."""
    try:
        data = json.loads(loop_file(work_dir).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def drift_python(cfg: KfkitConfig) -> Path:
    """The drift environment's Python: retrain.detector_python, else .venv-drift/bin/python of the checkout."""
    if cfg.retrain.detector_python:
        return Path(cfg.retrain.detector_python).expanduser()
    return Path(__file__).resolve().parents[2] / ".venv-drift" / "bin" / "python"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when ``kfkit run`` dies, even by SIGKILL (Linux prctl).

    The detector and the trigger belong to the run that started them; a run killed outright must not leave
    them holding their ports.
    """
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class _Child:
    """A background process of the loop, in its own session, logging to a file."""

    def __init__(self, name: str, command: list[str], log_path: Path) -> None:
        self.name, self.command, self.log_path = name, command, log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"$ {subprocess.list2cmdline(command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, url: str, timeout_s: float) -> None:
        """Wait for 200 on ``url``; stop the process and raise ServingError (quoting its log) otherwise."""
        import httpx

        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if not self.alive():
                    raise ServingError(
                        f"the {self.name} exited with code {self.process.returncode} before it was "
                        f"ready; log {self.log_path}:\n{_tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(url).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServingError(
                        f"the {self.name} was not ready within {timeout_s:g} s (stopped it; raise "
                        f"retrain.startup_timeout_s); log {self.log_path}:\n{_tail(self.log_path)}"
                    )
                time.sleep(0.25)

    def stop(self, timeout_s: float = 40.0) -> None:
        """SIGTERM the process group, then SIGKILL (the trigger needs a while to stop a running retrain)."""
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)


class DriftLoop:
    """The detector and the trigger of one serving ``kfkit run``, and the version they (and the predictor) follow."""

    def __init__(self, cfg: KfkitConfig, overrides: list[str], python: Path) -> None:
        self.cfg = cfg
        self.overrides = list(overrides)
        self.python = python
        host = cfg.serving.host if ":" not in cfg.serving.host else f"[{cfg.serving.host}]"
        self.detector_url = f"http://{host}:{cfg.retrain.detector_port}"
        self.trigger_url = f"http://{host}:{cfg.retrain.port}"
        self.folder = loop_file(cfg.work_dir).parent
        self.endpoint: LocalEndpoint | None = None
        self.version: str | None = None
        self.detector: _Child | None = None
        self.trigger: _Child | None = None
        self._next_follow = 0.0
        self._warned: set[str] = set()
        self._unservable: set[str] = set()

    @classmethod
    def prepare(cls, cfg: KfkitConfig, overrides: list[str]) -> tuple[KfkitConfig, DriftLoop | None]:
        """Check what the loop needs, and return the config to run with (payloads go to the detector).

        Without the drift environment (or the detector package) it says so and returns ``(cfg, None)``:
        the run serves without drift detection.

        Raises:
            ConfigError: a retrain.* value is out of bounds.
        """
        check_retrain(cfg.retrain)
        python = drift_python(cfg)
        missing = None
        if not python.is_file():
            missing = (
                f"no drift environment at {python} (`make setup` builds .venv-drift; or set retrain.detector_python)"
            )
        elif importlib.util.find_spec(_DETECTOR_MODULE) is None:
            missing = f"the drift detector ({_DETECTOR_MODULE}) is not installed"
        if missing:
            print(f"kfkit run: {missing}: serving without drift detection (--no-drift silences this)", flush=True)
            return cfg, None
        cfg = dataclasses.replace(cfg, retrain=_free_ports(cfg))
        loop = cls(cfg, overrides, python)
        if cfg.serving.payload_log_url:
            print(
                f"kfkit run: serving.payload_log_url={cfg.serving.payload_log_url} is replaced by the drift detector "
                f"{loop.detector_url}/ (--no-drift keeps it)",
                flush=True,
            )
        serving = dataclasses.replace(cfg.serving, payload_log_url=f"{loop.detector_url}/")
        loop.cfg = dataclasses.replace(cfg, serving=serving)
        return loop.cfg, loop

    def start(self, summary: dict[str, Any]) -> None:
        """Start the trigger and the detector for the version the run serves; a failure is reported, not raised.

        Args:
            summary: The run summary (``model_uri``, ``version``, ``endpoint``).
        """
        from kfkit.deploy.local import LocalEndpoint

        self.endpoint = LocalEndpoint.from_dict(summary["endpoint"])
        self.version = str(summary["version"])
        cfg, logs = self.cfg, Path(self.cfg.work_dir) / "logs"
        trigger_command = [
            sys.executable,
            "-m",
            "kfkit.retrain",
            "--host",
            cfg.serving.host,
            "--port",
            str(cfg.retrain.port),
            "--state-dir",
            str(self.folder / "trigger"),
            *self.overrides,
            f"work_dir={cfg.work_dir}",
            f"registry.uri={cfg.registry.uri}",
        ]
        self.trigger = _Child("retrain trigger", trigger_command, logs / f"retrain-trigger-{cfg.model.name}.log")
        self.detector = self._start_detector(summary["model_uri"])
        try:
            self.trigger.wait_ready(f"{self.trigger_url}/v2/health/ready", cfg.retrain.startup_timeout_s)
        except ServingError as e:
            print(f"kfkit run: warning: {e}\n  drift is detected and reported, but nothing retrains", file=sys.stderr)
            self.trigger = None
        if not self._wait_detector():
            return
        self._write()
        if not cfg.registry.promote_to:
            print(
                "kfkit run: registry.promote_to is null: a retrained version that passes the gate is published, "
                "not served (promote it and restart)",
                flush=True,
            )
        retrain = cfg.retrain
        default_dir = Path(".kfkit").resolve() == Path(cfg.work_dir).resolve()
        where = "" if default_dir else f" work_dir={cfg.work_dir}"
        print(
            f"  drift     detector {self.detector_url} (payloads from the predictor; reports at "
            f"{self.detector_url}/v1/drift/reports)\n"
            f"  retrain   {f'trigger {self.trigger_url}' if self.trigger else 'no trigger'} (drift in "
            f"{retrain.min_drifted} of the last {retrain.window_span} windows, cooldown {retrain.cooldown_s:g} s)"
            f"; audit {self._audit_path()}\n"
            f"  try       kfkit drift simulate --shift 0.5 --features 3{where}   |   kfkit drift status{where}",
            flush=True,
        )

    def _start_detector(self, model_uri: str) -> _Child:
        # One state folder per version: its open window survives a restart, and the reports the audit links to
        # (w<N>.html) are not overwritten by the next version's windows.
        cfg = self.cfg
        command = [
            str(self.python),
            "-m",
            _DETECTOR_MODULE,
            "--model-uri",
            model_uri,
            "--host",
            cfg.serving.host,
            "--port",
            str(cfg.retrain.detector_port),
            "--sink",
            f"{self.trigger_url}/",
            "--state-dir",
            str(self.folder / "detector" / f"v{self.version}"),
        ]
        return _Child("drift detector", command, Path(cfg.work_dir) / "logs" / f"drift-detector-{cfg.model.name}.log")

    def _wait_detector(self) -> bool:
        assert self.detector is not None
        try:
            self.detector.wait_ready(f"{self.detector_url}/v2/health/ready", self.cfg.retrain.startup_timeout_s)
        except ServingError as e:
            print(f"kfkit run: warning: {e}\n  serving without drift detection", file=sys.stderr)
            self.detector = None
            if self.trigger is not None:
                self.trigger.stop()
                self.trigger = None
            return False
        return True

    def tick(self) -> int:
        """Called while serving: follow the promote alias (every few seconds); returns the predictor's pid."""
        assert self.endpoint is not None
        for child in (self.detector, self.trigger):
            if child is not None and not child.alive() and child.name not in self._warned:
                self._warned.add(child.name)
                print(
                    f"kfkit run: warning: the {child.name} exited (code {child.process.returncode}); see "
                    f"{child.log_path}",
                    file=sys.stderr,
                )
        if time.monotonic() >= self._next_follow:
            self._next_follow = time.monotonic() + _FOLLOW_EVERY_S
            self._follow()
        return self.endpoint.pid

    def _follow(self) -> None:
        from kfkit.retrain.launch import production_version

        if not self.cfg.registry.promote_to:
            return  # no alias moves: a retrained version is published, a person promotes and restarts
        version = production_version(self.cfg)
        if version is None or version == self.version or version in self._unservable:
            return
        try:
            self._swap(version)
        except KfkitError as e:
            print(f"kfkit run: warning: could not move to version {version}: {e}", file=sys.stderr)
            self._unservable.add(version)  # not tried again every tick; the server log says what failed

    def _swap(self, version: str) -> None:
        """Serve ``version`` on the same ports (a few seconds without answers), then rebuild the detector for it."""
        from kfkit.deploy.local import start_server, stop_server
        from kfkit.registry import open_registry

        assert self.endpoint is not None
        cfg = self.cfg
        registry = open_registry(cfg.registry.uri, endpoint=cfg.registry.endpoint, region=cfg.registry.region)
        uri = registry.version_uri(cfg.model.name, version)
        print(
            f"kfkit run: {cfg.registry.promote_to} is now version {version} (was {self.version}): restarting the "
            "predictor and the drift detector with it",
            flush=True,
        )
        if self.detector is not None:  # first, so no row of the new version lands in the old version's window
            self.detector.stop()
        old = self.endpoint
        stop_server(old)
        try:
            self.endpoint = start_server(uri, model_name=cfg.model.name, log_path=old.log_path, serving=cfg.serving)
        except KfkitError:
            previous = registry.version_uri(cfg.model.name, self.version or "")
            self.endpoint = start_server(
                previous, model_name=cfg.model.name, log_path=old.log_path, serving=cfg.serving
            )
            if self.detector is not None:
                self.detector = self._start_detector(previous)
                self._wait_detector()
            raise
        self.version = version
        if self.detector is not None:
            self.detector = self._start_detector(uri)
            self._wait_detector()
        self._write()
        print(f"kfkit run: version {version} serves at {self.endpoint.v2_url} (pid {self.endpoint.pid})", flush=True)

    def stop(self) -> LocalEndpoint | None:
        """Stop the detector and the trigger (a retrain in progress is stopped too); returns the live endpoint."""
        for child in (self.detector, self.trigger):
            if child is not None:
                child.stop()
        self.detector = self.trigger = None
        with contextlib.suppress(OSError):
            loop_file(self.cfg.work_dir).unlink()
        return self.endpoint

    def _audit_path(self) -> Path:
        from kfkit.retrain.audit import audit_path

        return audit_path(self.cfg.registry.uri, self.cfg.model.name, self.folder / "trigger")

    def _write(self) -> None:
        assert self.endpoint is not None
        document = {
            "model": self.cfg.model.name,
            "version": self.version,
            "predictor": self.endpoint.to_dict(),
            "detector": self.detector_url if self.detector else None,
            "trigger": self.trigger_url if self.trigger else None,
            "overrides": self.overrides,
            "work_dir": self.cfg.work_dir,
            "audit": str(self._audit_path()),
            "pid": os.getpid(),
            "updated": utc_now(),
        }
        path = loop_file(self.cfg.work_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_text(json.dumps(document, indent=2) + "\n")
        os.replace(temporary, path)


def _free_ports(cfg: KfkitConfig):
    """retrain.* with the detector's and the trigger's ports, each moved to a free one if it is taken (and said so).

    Unlike the predictor's port, which clients call, these two are found through loop.json: a port another
    process holds (a second kfkit run) is no reason to refuse serving.
    """
    from kfkit.deploy.local import ensure_port_free, free_port

    retrain = cfg.retrain
    for key in ("detector_port", "port"):
        try:
            ensure_port_free(cfg.serving.host, getattr(retrain, key), f"retrain.{key}")
        except ServingError:
            port = free_port(cfg.serving.host)
            print(
                f"kfkit run: retrain.{key}={getattr(retrain, key)} is in use; using {port} (set retrain.{key} to "
                "choose)",
                flush=True,
            )
            retrain = dataclasses.replace(retrain, **{key: port})
    return retrain


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"    (cannot read the log: {e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])
