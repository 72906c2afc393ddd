"""Run a kfkit model server as a local background process: start, wait until ready, call, stop.

A little over 400 lines: starting, waiting for, calling and stopping the server process share the
process bookkeeping (own session, pid reuse, zombies) that makes stop safe to call twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError, ServingError
from kfkit.model.names import INPUT_NAME

if TYPE_CHECKING:
    from kfkit.config import ServingConfig

# Only the standard library at import time: the CLI imports this module, and kserve/torch take seconds.

__all__ = [
    "LocalEndpoint",
    "start_server",
    "stop_server",
    "infer_v2",
    "ensure_port_free",
    "free_port",
]

_SERVER_MODULE = "kfkit.serving.server"
_LOG_TAIL_LINES = 20
_POLL_INTERVAL_S = 0.25

# Popen objects of servers this process started, so stop_server can reap them (no zombies, no
# ResourceWarning); a server started by another process is stopped by pid alone.
_LAUNCHED: dict[int, subprocess.Popen] = {}


@dataclass
class LocalEndpoint:
    """A running local model server, as passed between pipeline steps (see :meth:`to_dict`)."""

    model_name: str
    """Endpoint name in the URL paths."""
    pid: int
    """Process id of the server; also its process group id (it runs in its own session)."""
    host: str
    """Interface it listens on."""
    http_port: int
    """REST port (V1 and V2)."""
    grpc_port: int
    """V2 gRPC port."""
    log_path: Path
    """File receiving the server's stdout and stderr."""

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the REST server."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # IPv6 literals need brackets in URLs
        return f"http://{host}:{self.http_port}"

    @property
    def v1_url(self) -> str:
        """KServe V1 predict URL."""
        return f"{self.base_url}/v1/models/{self.model_name}:predict"

    @property
    def v2_url(self) -> str:
        """Open Inference Protocol (V2) REST infer URL."""
        return f"{self.base_url}/v2/models/{self.model_name}/infer"

    @property
    def grpc_target(self) -> str:
        """``host:port`` for a V2 gRPC channel."""
        return f"{self.host}:{self.grpc_port}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for passing the endpoint to another step or process."""
        return {
            "model_name": self.model_name,
            "pid": self.pid,
            "host": self.host,
            "http_port": self.http_port,
            "grpc_port": self.grpc_port,
            "log_path": str(self.log_path),
            "v1_url": self.v1_url,
            "v2_url": self.v2_url,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LocalEndpoint:
        """Inverse of :meth:`to_dict` (derived URL keys are ignored).

        Raises:
            ServingError: a field is missing or has the wrong type.
        """
        try:
            return cls(
                model_name=str(data["model_name"]),
                pid=int(data["pid"]),
                host=str(data["host"]),
                http_port=int(data["http_port"]),
                grpc_port=int(data["grpc_port"]),
                log_path=Path(data["log_path"]),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ServingError(f"not a local endpoint description ({e!r}): {data!r}") from e

    def curl_example(self, row: list[float]) -> str:
        """A shell command that scores ``row`` with a V2 REST request."""
        body = json.dumps(_v2_body([row]), separators=(",", ":"))
        return f"curl -sS -X POST {shlex.quote(self.v2_url)} -H 'Content-Type: application/json' -d {shlex.quote(body)}"


def start_server(
    model_uri: str,
    *,
    model_name: str,
    log_path: Path,
    serving: ServingConfig | None = None,
    host: str | None = None,
    http_port: int | None = None,
    grpc_port: int | None = None,
    timeout_s: float | None = None,
    **options: Any,
) -> LocalEndpoint:
    """Launch ``python -m kfkit.serving.server`` detached and wait until the model answers ready.

    The server gets its own session, so it outlives the process that started it (a kfp.local step);
    stop it with :func:`stop_server`. Its flags come from :func:`kfkit.config.server_flags`, the one
    conversion of a ServingConfig that every entry point uses.

    Args:
        model_uri: Published version URI (``file:///…/<name>/<version>``).
        model_name: Endpoint name.
        log_path: File for the server's output (appended to; its folder is created).
        serving: Host, ports, start-up timeout, batching, body limit and payload logging (default: the
            config's defaults).
        host: Interface to bind, instead of ``serving.host``.
        http_port: REST port, instead of ``serving.http_port``.
        grpc_port: gRPC port, instead of ``serving.grpc_port``.
        timeout_s: How long to wait for ``/v2/health/ready`` and ``/v2/models/<name>/ready``, instead of
            ``serving.startup_timeout_s``.
        **options: Other ``serving`` fields to override (``max_batch_size=16``, ``payload_log_url=...``).

    Returns:
        The running endpoint.

    Raises:
        ConfigError: an option is unknown or out of bounds.
        ServingError: a port is taken, the server exited, or it was not ready in time (it is then
            stopped); the message names the log file and quotes its last lines.
    """
    from kfkit.config import ServingConfig, server_flags

    given = {"host": host, "http_port": http_port, "grpc_port": grpc_port, "startup_timeout_s": timeout_s}
    try:
        serving = dataclasses.replace(
            serving or ServingConfig(), **options, **{k: v for k, v in given.items() if v is not None}
        )
    except TypeError as e:
        raise ConfigError(
            f"start_server: {e}; the options are the serving.* fields of kfkit.config.ServingConfig"
        ) from e
    host, http_port, grpc_port, timeout_s = (
        serving.host,
        serving.http_port,
        serving.grpc_port,
        serving.startup_timeout_s,
    )
    ensure_port_free(host, http_port, "serving.http_port")
    ensure_port_free(host, grpc_port, "serving.grpc_port")
    log_path = Path(log_path)
    command = [sys.executable, "-m", _SERVER_MODULE, "--model-uri", model_uri, "--model-name", model_name]
    command += ["--host", host, "--http_port", str(http_port), "--grpc_port", str(grpc_port), *server_flags(serving)]
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"$ {shlex.join(command)}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # so the log is current when we quote it
            )
    except OSError as e:
        raise ServingError(f"cannot start the model server ({shlex.join(command)}): {e}") from e
    _LAUNCHED[process.pid] = process
    endpoint = LocalEndpoint(
        model_name=model_name, pid=process.pid, host=host, http_port=http_port, grpc_port=grpc_port, log_path=log_path
    )
    _wait_ready(endpoint, process, timeout_s)
    return endpoint


def stop_server(endpoint_or_pid: LocalEndpoint | int, timeout_s: float = 10.0) -> bool:
    """Stop a server: SIGTERM its process group, wait, then SIGKILL. Safe to call twice.

    Args:
        endpoint_or_pid: The endpoint, or the server's pid.
        timeout_s: Grace period before SIGKILL.

    Returns:
        True if a running server was stopped, False if it was already gone.

    Raises:
        ServingError: the process survived SIGKILL, or we may not signal it.
    """
    pid = endpoint_or_pid.pid if isinstance(endpoint_or_pid, LocalEndpoint) else int(endpoint_or_pid)
    if not _is_our_server(pid):
        _LAUNCHED.pop(pid, None)
        return False
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            _signal_group(pid, sig)
        except ProcessLookupError:
            break
        except PermissionError as e:
            raise ServingError(f"not allowed to stop model server pid {pid}: {e}") from e
        if _wait_gone(pid, wait_s):
            break
    else:
        raise ServingError(f"model server pid {pid} survived SIGKILL; check it with `ps -p {pid}`")
    _LAUNCHED.pop(pid, None)
    return True


def infer_v2(endpoint: LocalEndpoint, rows: list[list[float]], *, timeout_s: float = 30.0) -> dict:
    """Score ``rows`` with one V2 REST request and return the response body.

    Raises:
        ServingError: the server is unreachable or answered with an error.
    """
    import httpx

    try:
        # trust_env=False: an HTTP(S)_PROXY from the environment must not capture calls to a local server
        with httpx.Client(timeout=timeout_s, trust_env=False) as client:
            response = client.post(endpoint.v2_url, json=_v2_body(rows))
    except httpx.HTTPError as e:
        raise ServingError(
            f"V2 request to {endpoint.v2_url} failed: {e}; see the server log {endpoint.log_path}"
        ) from e
    if response.status_code != 200:
        raise ServingError(f"V2 request to {endpoint.v2_url} answered {response.status_code}: {response.text[:500]}")
    try:
        return response.json()
    except ValueError as e:
        raise ServingError(f"V2 response from {endpoint.v2_url} is not JSON: {response.text[:200]!r}") from e


def _v2_body(rows: list[list[float]]) -> dict:
    width = len(rows[0]) if rows else 0
    return {"inputs": [{"name": INPUT_NAME, "shape": [len(rows), width], "datatype": "FP32", "data": rows}]}


def ensure_port_free(host: str, port: int, setting: str) -> None:
    """Fail at once, with the fix, if ``port`` cannot be bound (rather than after a slow server start).

    Args:
        host: Interface the server will bind.
        port: Port to check.
        setting: The config key that sets this port, quoted in the fix (``serving.http_port``).

    Raises:
        ServingError: the port is in use or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn does: a port left in TIME_WAIT by a stopped server is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ServingError(
                    f"port {port} on {host} is already in use (another model server? `ss -ltnp | grep :{port}`); "
                    f"stop it or pick a free port, e.g. {setting}={_free_port_hint(host, port)}"
                ) from e
            raise ServingError(f"cannot bind {host}:{port} ({setting}): {e}") from e


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it; another process may take it later)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _free_port_hint(host: str, port: int) -> int:
    """A nearby port that is free now (only a suggestion for the error message)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for candidate in range(port + 10, min(port + 200, 65535), 10):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return port + 10


def _wait_ready(endpoint: LocalEndpoint, process: subprocess.Popen, timeout_s: float) -> None:
    import httpx

    urls = [f"{endpoint.base_url}/v2/health/ready", f"{endpoint.base_url}/v2/models/{endpoint.model_name}/ready"]
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while True:
            code = process.poll()
            if code is not None:
                _LAUNCHED.pop(process.pid, None)
                raise ServingError(
                    f"model server exited with code {code} before it was ready; log {endpoint.log_path}:\n"
                    + _tail(endpoint.log_path)
                )
            try:
                if all(client.get(url).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                stop_server(endpoint)
                raise ServingError(
                    f"model server was not ready within {timeout_s:g}s (stopped it); raise "
                    f"serving.startup_timeout_s if the machine is slow; log {endpoint.log_path}:\n"
                    + _tail(endpoint.log_path)
                )
            time.sleep(_POLL_INTERVAL_S)


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError as e:
        return f"(cannot read the log: {e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _is_our_server(pid: int) -> bool:
    """Whether ``pid`` is alive and is a kfkit model server (a pid from an old endpoint file may be reused)."""
    process = _LAUNCHED.get(pid)
    if process is not None:
        return process.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else: the cmdline check below decides
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False  # gone meanwhile
    except OSError:
        return True  # no /proc (macOS): trust the caller's pid
    return _SERVER_MODULE.encode() in cmdline


def _signal_group(pid: int, sig: signal.Signals) -> None:
    group = os.getpgid(pid)
    # start_server made the server a session (and group) leader; signal its whole group so workers go too.
    if group == pid:
        os.killpg(pid, sig)
    else:
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    process = _LAUNCHED.get(pid)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
        return process.poll() is not None
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if _is_zombie(pid):
            return True  # exited; its parent has not reaped it yet
        time.sleep(0.1)
    return False


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]
