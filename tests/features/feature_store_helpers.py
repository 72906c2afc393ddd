"""Helpers of the feature-store tests: a real redis-server on 127.0.0.1, and configs for a generated repository."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kfkit.config import KfkitConfig, compose
from kfkit.deploy.local import free_port

REDIS_MISSING = "missing tool: redis-server (apt-get install redis-server)"


@dataclass
class RedisServer:
    """A running redis-server: its port and process."""

    port: int
    process: subprocess.Popen


@contextlib.contextmanager
def redis_server(root: Path) -> Iterator[RedisServer]:
    """Start Debian's redis-server on a free 127.0.0.1 port (no persistence, in ``root``); kill it after.

    Skips the test (``missing tool:``) where redis-server is not installed.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(REDIS_MISSING)
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(root), "--protected-mode", "yes"]  # fmt: skip
    log = open(root / "redis.log", "wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, (root / "redis.log").read_text()
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    break
            assert time.monotonic() < deadline, "redis-server did not answer PING in 10 s"
            time.sleep(0.05)
        yield RedisServer(port, process)
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def features_config(repo: Path, *overrides: str, store: str = "sqlite", redis_port: int | None = None) -> KfkitConfig:
    """synthetic_fraud with features on, the repository at ``repo``, the online store ``store``."""
    extra = [f"features.redis.port={redis_port}"] if redis_port else []
    return compose(
        ["dataset=synthetic_fraud", "features.enabled=true", f"features.repo_path={repo}",
         f"features.online_store={store}", *extra, *overrides]
    )  # fmt: skip


@dataclass
class Transformer:
    """A running ``python -m kfkit.serving.transformer``: its URL, process and log."""

    url: str
    process: subprocess.Popen
    log: Path


@contextlib.contextmanager
def transformer(repo: Path, model_uri: str, predictor_port: int, log: Path, *extra: str) -> Iterator[Transformer]:
    """Start the Feast transformer in front of the predictor on 127.0.0.1; wait for ready; stop it after."""
    import os
    import signal
    import sys

    import httpx

    port = free_port()
    command = [sys.executable, "-m", "kfkit.serving.transformer", "--feast-repo", str(repo), "--model-uri", model_uri,
               "--predictor-host", f"127.0.0.1:{predictor_port}", "--http_port", str(port), *extra]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=2, trust_env=False).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"transformer not ready; log:\n{log.read_text()[-3000:]}"
            time.sleep(0.25)
        yield Transformer(url, process, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
