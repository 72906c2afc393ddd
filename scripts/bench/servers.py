"""The servers under test as processes: kfkit's (through kfkit.deploy.local), MLServer's, the bare gRPC floor.

Every server runs pinned to the server core with one OpenMP/MKL thread: it is started from a thread whose
CPU affinity is that core, so the process inherits the mask from its first instruction, as under
``taskset`` (TensorFlow and grpcio size their thread pools from the cores they can see at start-up).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kfkit.config import ServingConfig, server_flags
from kfkit.deploy.local import free_port, start_server, stop_server
from kfkit.errors import ServingError

from .fixtures import MODEL_NAME, BenchModel
from .settings import BenchSettings

__all__ = [
    "REPO",
    "Server",
    "KfkitServer",
    "ProcessServer",
    "kfkit_server",
    "mlserver_server",
    "mlserver_python",
    "start_servers",
    "start_bare_grpc",
    "on_cpu",
    "one_thread_env",
    "process_group_cpu_s",
]

REPO = Path(__file__).resolve().parents[2]
"""The checkout's root (relative MLServer environments are found from here)."""
_RUNTIME_MODULE = "kfkit_bench_runtime"  # the name the runtime file gets in MLServer's model folder
_READY_TIMEOUT_S = 180.0
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@contextlib.contextmanager
def on_cpu(cpu: int | None) -> Iterator[None]:
    """Run the block on core ``cpu``: the calling thread, and the threads and processes it starts meanwhile.

    Linux applies ``sched_setaffinity(0, …)`` to the calling thread only, and children inherit it.
    """
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def one_thread_env() -> dict[str, str]:
    """This environment, with one OpenMP/MKL thread and unbuffered Python output."""
    return {**os.environ, **_ONE_THREAD, "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def _one_thread_environ() -> Iterator[None]:
    """One OpenMP/MKL thread in ``os.environ`` for the block: ``start_server`` passes this environment on."""
    saved = {name: os.environ.get(name) for name in _ONE_THREAD}
    os.environ.update(_ONE_THREAD)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def process_group_cpu_s(pgid: int) -> float:
    """utime+stime (seconds) of every live process in a process group, threads included."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        # after "pid (comm)": state ppid pgrp session ... utime(14th field overall) stime(15th)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


@dataclass
class Server:
    """One server under test; it runs in its own session, so its pid is its process group."""

    name: str
    kind: str
    """``kfkit`` or ``mlserver``."""
    http_port: int
    grpc_port: int
    log_path: Path
    description: str = ""
    pid: int | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<http_port>``."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        """``127.0.0.1:<grpc_port>``."""
        return f"127.0.0.1:{self.grpc_port}"

    def cpu_s(self) -> float:
        """CPU seconds the server's processes have used so far."""
        return process_group_cpu_s(self.pid) if self.pid else 0.0

    def command_line(self) -> str:
        """The command that started it, as its log records it."""
        with contextlib.suppress(OSError):
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.startswith("$ ")]
            if lines:
                return lines[-1][2:]
        return ""

    def start(self) -> None:
        """Start the process (:class:`KfkitServer`: and wait until it is ready)."""
        raise NotImplementedError

    def wait_ready(self) -> None:
        """Wait until the server answers ready (a no-op once :meth:`start` has waited)."""

    def stop(self) -> None:
        """Stop it; safe to call twice, or when it never started."""
        raise NotImplementedError


@dataclass
class KfkitServer(Server):
    """kfkit's server as shipped, started and stopped by :mod:`kfkit.deploy.local`."""

    model_uri: str = ""
    overrides: dict[str, Any] = field(default_factory=dict)
    """``serving.*`` fields that differ from the defaults (``max_batch_size=1``)."""

    def start(self) -> None:
        """Start the server and wait until the model is ready (``start_server`` stops it if not)."""
        endpoint = start_server(
            self.model_uri,
            model_name=MODEL_NAME,
            log_path=self.log_path,
            host="127.0.0.1",
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            timeout_s=_READY_TIMEOUT_S,
            **self.overrides,
        )
        self.pid = endpoint.pid

    def stop(self) -> None:
        """SIGTERM the server's group, SIGKILL after 15 s."""
        if self.pid is not None:
            stop_server(self.pid, timeout_s=15.0)


@dataclass
class ProcessServer(Server):
    """A server this module starts with a command of its own (MLServer; kfkit with raw ``--kfkit-arg``s)."""

    command: list[str] = field(default_factory=list)
    cwd: Path | None = None
    process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the process; :meth:`wait_ready` waits for it."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=one_thread_env(),
                cwd=self.cwd,
            )
        self.pid = self.process.pid

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Poll ``/v2/health/ready`` and the model's ready URL.

        Raises:
            ServingError: the process exited, or was not ready within ``timeout_s``.
        """
        import httpx

        urls = [f"{self.base_url}/v2/health/ready", f"{self.base_url}/v2/models/{MODEL_NAME}/ready"]
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise ServingError(
                        f"{self.name} exited with code {self.process.returncode} before it was ready; "
                        f"see {self.log_path}:\n{_tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if all(client.get(url).status_code == 200 for url in urls):
                        return
                if time.monotonic() > deadline:
                    raise ServingError(f"{self.name} not ready within {timeout_s:g}s; see {self.log_path}")
                time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)
                return


def kfkit_server(name: str, model: BenchModel, settings: BenchSettings, logs: Path, **overrides: Any) -> Server:
    """kfkit's server for ``model``; ``overrides`` are ``serving.*`` fields (``max_batch_size=1``)."""
    http_port, grpc_port = free_port(), free_port()
    shown = " + " + ", ".join(f"{k}={v}" for k, v in overrides.items()) if overrides else ""
    common = {"name": name, "kind": "kfkit", "http_port": http_port, "grpc_port": grpc_port}
    common |= {"log_path": logs / f"{name}.log", "description": f"kfkit server as shipped{shown}"}
    if not settings.kfkit_args:
        return KfkitServer(**common, model_uri=model.uri, overrides=overrides)
    # start_server takes serving.* fields only; raw server arguments need a command of our own.
    command = [sys.executable, "-m", "kfkit.serving.server", "--model-uri", model.uri, "--model-name", MODEL_NAME]
    command += ["--host", "127.0.0.1", "--http_port", str(http_port), "--grpc_port", str(grpc_port)]
    command += [*server_flags(ServingConfig(**overrides)), *settings.kfkit_args]
    common["description"] += " + " + " ".join(settings.kfkit_args)
    return ProcessServer(**common, command=command)


def mlserver_python(settings: BenchSettings) -> Path | None:
    """The MLServer environment's ``mlserver`` binary, or None when it has not been built."""
    venv = Path(settings.mlserver_venv)
    if not venv.is_absolute():
        venv = REPO / venv
    binary = venv / "bin" / "mlserver"
    return binary if binary.is_file() else None


def mlserver_server(
    name: str, model: BenchModel, settings: BenchSettings, logs: Path, work: Path, *, tuned: bool, batching: bool
) -> ProcessServer:
    """MLServer 1.7.1 serving ``model``'s safetensors through ``mlserver_runtime.py``.

    Raises:
        ServingError: the MLServer environment does not exist.
    """
    binary = mlserver_python(settings)
    if binary is None:
        raise ServingError(f"MLServer is not installed at {settings.mlserver_venv}")
    folder = work / name
    model_folder = folder / MODEL_NAME
    model_folder.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("mlserver_runtime.py"), model_folder / f"{_RUNTIME_MODULE}.py")
    http_port, grpc_port = free_port(), free_port()
    server_settings: dict[str, Any] = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port}
    server_settings["metrics_port"] = free_port()
    if tuned:  # MLServer's fastest single-worker setting: inference in the server process, no metrics, no debug
        server_settings |= {"parallel_workers": 0, "metrics_endpoint": None, "debug": False}
    (folder / "settings.json").write_text(json.dumps(server_settings, indent=2))
    model_settings = {
        "name": MODEL_NAME,
        "implementation": f"{_RUNTIME_MODULE}.KfkitMLP",
        "parameters": {"uri": str(model.model_dir)},
    }
    if batching:  # MLServer's own adaptive batching, with kfkit's default limits
        defaults = ServingConfig()
        model_settings |= {
            "max_batch_size": defaults.max_batch_size,
            "max_batch_time": defaults.max_batch_latency_ms / 1000,
        }
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return ProcessServer(
        name=name,
        kind="mlserver",
        command=[str(binary), "start", str(folder)],
        http_port=http_port,
        grpc_port=grpc_port,
        log_path=logs / f"{name}.log",
        cwd=folder,
        description="MLServer 1.7.1, "
        + ("parallel_workers=0, metrics off, debug off" if tuned else "defaults")
        + (", adaptive batching (max_batch_size, max_batch_time)" if batching else ""),
    )


def start_servers(servers: Sequence[Server], cpu: int | None, progress: Callable[[str], None]) -> None:
    """Start every server on core ``cpu``, all at once (they load in parallel), and wait until all are ready.

    Raises:
        ServingError: a server did not start; the others are left running for the caller to stop.
    """
    errors: list[BaseException] = []
    with on_cpu(cpu), _one_thread_environ():
        for server in servers:
            if isinstance(server, ProcessServer):
                server.start()
        waiting = [s for s in servers if not isinstance(s, ProcessServer)]
        if waiting:
            # start_server blocks until its server is ready; its threads inherit this core, and so its servers
            with ThreadPoolExecutor(len(waiting), thread_name_prefix="bench-start") as pool:
                for server in waiting:
                    progress(f"waiting for {server.name} ({server.description})")
                futures = [pool.submit(server.start) for server in waiting]
                errors += [e for e in (f.exception() for f in futures) if e is not None]
    for server in servers:
        if isinstance(server, ProcessServer):
            progress(f"waiting for {server.name} ({server.description})")
            server.wait_ready()
    if errors:
        raise errors[0]


def start_bare_grpc(port: int, batch: int, cpu: int | None, stack: str = "aio") -> subprocess.Popen:
    """``bare_grpc_server.py`` (``stack``) on ``port`` and core ``cpu``, answering a constant ``batch``-row response.

    Raises:
        ServingError: it did not print READY.
    """
    script = Path(__file__).with_name("bare_grpc_server.py")
    with on_cpu(cpu):
        # -P: run by path without putting this folder first on sys.path (its module names are generic)
        process = subprocess.Popen(
            [sys.executable, "-P", str(script), stack, str(port), str(batch)],
            stdout=subprocess.PIPE,
            text=True,
            env=one_thread_env(),
            start_new_session=True,
        )
    if process.stdout is None or process.stdout.readline().strip() != "READY":
        process.terminate()
        process.wait(timeout=10)
        raise ServingError(f"the bare gRPC server ({script} {stack}) did not start")
    return process
