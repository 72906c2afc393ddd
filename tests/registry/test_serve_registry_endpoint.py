"""`kfkit serve registry.endpoint=…` reads the version from that S3 store, not from $AWS_ENDPOINT_URL or AWS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from kfkit.registry import open_registry


@pytest.mark.slow
def test_kfkit_serve_honours_the_registry_endpoint_override(s3_server, trained_breast_cancer, tmp_path, free_port):
    root = f"s3://{s3_server.bucket}/serve-{uuid.uuid4().hex[:8]}"
    version = open_registry(root, endpoint=s3_server.endpoint).publish(trained_breast_cancer["model"], name="bc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env |= {"KFKIT_CACHE_DIR": str(tmp_path / "cache")}
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "kfkit.cli", "serve", "--model-uri", version.uri,
               "--http-port", str(http_port), "--grpc-port", str(grpc_port),
               f"registry.endpoint={s3_server.endpoint}", "registry.region=us-east-1"]  # fmt: skip
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/models/bc/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert server.poll() is None, log.read_text()[-2000:]
        answer = httpx.get(f"http://127.0.0.1:{http_port}/v2/models/bc", timeout=5)
        assert answer.status_code == 200, log.read_text()[-2000:]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
