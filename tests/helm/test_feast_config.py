"""The chart's Feast feature server config, run for real: the rendered feature_store.yaml (Redis online store,
password from the environment) and the bundled Redis's arguments drive Debian's redis-server and Feast's own
`feast serve` on 127.0.0.1, and a feature written to the online store comes back over HTTP."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from kfkit.deploy.local import free_port

pytestmark = pytest.mark.slow  # redis-server, feast apply, feast serve: ~20 s

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kfkit"
HELM = REPO / ".tools" / "bin" / "helm"
FEAST = Path(sys.executable).parent / "feast"
PASSWORD = "chart-test-password"  # a test's own throwaway Redis on 127.0.0.1
FEATURES = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float32

card = Entity(name="card", join_keys=["card"])
source = FileSource(path="cards.parquet", timestamp_field="event_timestamp")
card_stats = FeatureView(name="card_stats", entities=[card], ttl=timedelta(days=1),
                         schema=[Field(name="amount", dtype=Float32)], source=source)
"""


def _render(*sets: str) -> list[dict[str, Any]]:
    args = [a for s in sets for a in ("--set", s)]
    result = subprocess.run([HELM, "template", "kfkit", CHART, "-n", "kfkit", "--set", "feast.enabled=true",
                             "--set", "storage.s3.existingSecret=kfkit-s3", *args],
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _deployment(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (doc,) = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return doc["spec"]["template"]["spec"]["containers"][0]


def _wait(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if httpx.get(url, timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not up in {timeout_s}s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def redis(tmp_path):
    """Debian's redis-server with the bundled Redis's rendered arguments (plus a 127.0.0.1 port)."""
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("missing tool: redis-server (Debian package redis-server; scripts/install_system_tools.sh)")
    if not HELM.is_file():
        pytest.skip(f"missing tool: helm is not installed at {HELM}: run `make tools`")
    container = _deployment(_render("feast.registry=r.db", "feast.redis.existingSecret=kfkit-redis"), "kfkit-redis")
    assert container["command"] == ["redis-server"]
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert env == {"REDIS_PASSWORD": {"name": "kfkit-redis", "key": "redis-password"}}
    data = tmp_path / "redis-data"
    data.mkdir()
    # Kubernetes expands $(REDIS_PASSWORD) from the Secret; the emptyDir at /data is a folder here.
    args = [a.replace("$(REDIS_PASSWORD)", PASSWORD).replace("/data", str(data)) for a in container["args"]]
    port = free_port()
    log = tmp_path / "redis.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([server, *args, "--port", str(port), "--bind", "127.0.0.1"], stdout=out,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        import redis as redis_client

        client = redis_client.Redis(host="127.0.0.1", port=port, password=PASSWORD)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert client.ping()
                break
            except redis_client.ConnectionError:
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()
                time.sleep(0.2)
        with pytest.raises(redis_client.AuthenticationError):  # the password is required
            redis_client.Redis(host="127.0.0.1", port=port, password="wrong").ping()
        yield port
    finally:
        _stop(process)


def test_feast_serves_features_from_redis_with_the_charts_config(redis, tmp_path):
    import pandas as pd

    repo = tmp_path / "feature-repo"
    repo.mkdir()
    sets = [f"feast.registry={repo / 'registry.db'}", "feast.redis.bundled=false",
            f"feast.redis.host=127.0.0.1:{redis}", "feast.redis.existingSecret=kfkit-redis"]  # fmt: skip
    docs = _render(*sets)
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kfkit-feast"]
    text = config_map["data"]["feature_store.yaml"]
    assert PASSWORD not in text and "${REDIS_PASSWORD}" in text  # the Secret's value never reaches the ConfigMap
    container = _deployment(docs, "kfkit-feast")
    assert container["command"] == ["feast", "--chdir", "/feature-repo", "serve"]
    (repo / "feature_store.yaml").write_text(text)
    (repo / "features.py").write_text(FEATURES)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    rows = pd.DataFrame({"card": [7, 8], "amount": [12.5, 99.0], "event_timestamp": [now, now]})
    rows.to_parquet(repo / "cards.parquet", index=False)
    env = {**os.environ, "REDIS_PASSWORD": PASSWORD, "HOME": str(tmp_path), "FEAST_USAGE": "False"}
    applied = subprocess.run([FEAST, "--chdir", repo, "apply"], capture_output=True, text=True, env=env, timeout=180)
    assert applied.returncode == 0, applied.stdout[-2000:] + applied.stderr[-2000:]
    end = (now + pd.Timedelta(seconds=1)).isoformat()
    materialized = subprocess.run([FEAST, "--chdir", repo, "materialize-incremental", end], capture_output=True,
                                  text=True, env=env, timeout=180)  # fmt: skip
    assert materialized.returncode == 0, materialized.stdout[-2000:] + materialized.stderr[-2000:]

    port = free_port()
    args = [a if a != "0.0.0.0" else "127.0.0.1" for a in container["args"]]  # the rendered flags, on loopback
    args[args.index("--port") + 1] = str(port)
    log = tmp_path / "feast.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([FEAST, "--chdir", repo, "serve", *args], stdout=out, stderr=subprocess.STDOUT,
                                  env=env)  # fmt: skip
    try:
        _wait(f"http://127.0.0.1:{port}/health", server, log)  # the chart's probe path
        body = {"features": ["card_stats:amount"], "entities": {"card": [7, 8]}}
        answer = httpx.post(f"http://127.0.0.1:{port}/get-online-features", json=body, timeout=30, trust_env=False)
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        assert results[1]["values"] == [12.5, 99.0]  # read back from Redis, with the password from the env
    finally:
        _stop(server)
