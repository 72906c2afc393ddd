"""Helpers of the image tests: build both images with scripts/build-images.sh, run commands in them.

A container is a buildah working container run with ``buildah run --isolation chroot``: it shares the
host network, so a server inside answers on 127.0.0.1, and it runs as the image's user (uid 1000).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY = os.environ.get("KFKIT_TEST_IMAGE_REGISTRY", "localhost/kfkit")
TAG = os.environ.get("KFKIT_TEST_IMAGE_TAG", "test")
IMAGE_UID = 1000
# A cold build (no layers, no pip cache) takes tens of minutes on 2 cores; a warm one seconds.
BUILD_TIMEOUT_S = float(os.environ.get("KFKIT_TEST_IMAGE_BUILD_TIMEOUT_S", 3600))


def require_tools() -> None:
    """Skip (a failure in CI) where buildah or debootstrap is not installed."""
    for tool, package in (("buildah", "buildah"), ("debootstrap", "debootstrap")):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"missing tool: {tool} (scripts/install_system_tools.sh or apt-get install {package})")


def build_images(log: Path) -> dict[str, str]:
    """Run scripts/build-images.sh (it skips an image whose inputs did not change); name -> image reference."""
    command = ["bash", str(REPO / "scripts" / "build-images.sh"), "--registry", REGISTRY, "--tag", TAG]
    with open(log, "ab") as out:
        result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE, stderr=out, timeout=BUILD_TIMEOUT_S)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}; log {log}:\n{tail(log)}")
    built = result.stdout.decode().split()
    return {ref.rsplit("/", 1)[-1].split(":")[0]: ref for ref in built}


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def writable(path: Path) -> Path:
    """Make ``path`` (a folder) writable by the image's user, who is not the user running the tests."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


class Container:
    """A working container of ``image``; ``run`` a command to the end or ``start`` a server in it.

    Args:
        image: Image reference.
        volumes: Host folder -> ``"/path/in/container[:ro]"``.
        env: Variables set for each command.
    """

    def __init__(self, image: str, volumes: dict[Path, str] | None = None, env: dict[str, str] | None = None):
        self.image = image
        self.options = ["--isolation", "chroot"]
        for host, inside in (volumes or {}).items():
            self.options += ["--volume", f"{host}:{inside}"]
        for key, value in (env or {}).items():
            self.options += ["--env", f"{key}={value}"]
        self.name = ""
        self._servers: list[subprocess.Popen] = []

    def __enter__(self) -> Container:
        made = subprocess.run(["buildah", "from", "--pull=never", "--quiet", self.image], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        assert made.returncode == 0, f"buildah from {self.image}: {made.stderr}"
        self.name = made.stdout.strip()
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self._servers:
            stop(process)
        subprocess.run(["buildah", "rm", self.name], capture_output=True, timeout=120)

    def command(self, *argv: str, user: str = "") -> list[str]:
        """The ``buildah run`` command line that runs ``argv`` in this container (as ``user``, else the image's)."""
        return ["buildah", "run", *self.options, *(["--user", user] if user else []), self.name, "--", *argv]

    def run(self, *argv: str, timeout: float = 300, user: str = "") -> subprocess.CompletedProcess:
        """Run ``argv`` to the end; its output as text."""
        return subprocess.run(self.command(*argv, user=user), capture_output=True, text=True, timeout=timeout)

    def start(self, *argv: str, log: Path) -> subprocess.Popen:
        """Start ``argv`` in the background (its own process group, so :func:`stop` ends it whole)."""
        with open(log, "ab") as out:
            process = subprocess.Popen(self.command(*argv), stdin=subprocess.DEVNULL, stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self._servers.append(process)
        return process


def stop(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group started by :meth:`Container.start`, then SIGKILL it."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue


def wait_http_200(urls: list[str], process: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    """Poll until every URL answers 200; fail with the log if the process exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"the container's process exited {process.returncode}:\n{tail(log)}")
            try:
                if all(client.get(url).status_code == 200 for url in urls):
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.5)
    raise AssertionError(f"{urls} not all 200 within {timeout_s:g}s:\n{tail(log)}")


def port_is_closed(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:port."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0
