"""Deploy fixtures: an S3 registry (moto on 127.0.0.1) with published versions, and the scenario API server."""

from __future__ import annotations

import logging
import os
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # kube_scenario, beside this file

from deploy_support import BUCKET, GIT_COMMIT, S3_ENV, publish_versions  # noqa: F401
from kube_scenario import Scenario, ScenarioApiServer

from kfkit.config import KfkitConfig, compose


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free 127.0.0.1 port, with a bucket and the credentials env variables set."""
    from minio import Minio
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    Minio(f"{host}:{port}", access_key="testing", secret_key="testing", secure=False).make_bucket(BUCKET)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def world(s3_endpoint, tmp_path):
    """A config on a fresh S3 registry prefix with versions 1-3 of breast-cancer-mlp, and a scenario server.

    ``world.start(scenario, *overrides)`` starts the server (stopped after the test) and returns it, with
    ``world.cfg`` composed for it.
    """
    from kfkit.registry import open_registry

    prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    registry = open_registry(prefix, endpoint=s3_endpoint, cache_dir=tmp_path / "cache")
    publish_versions(registry, "breast-cancer-mlp", 3, tmp_path)
    servers: list[ScenarioApiServer] = []
    state = SimpleNamespace(registry=registry, cfg=None, servers=servers, endpoint=s3_endpoint)

    def configure(*overrides: str) -> KfkitConfig:
        picked = any(o.startswith("deploy=") for o in overrides)
        cfg = compose([*([] if picked else ["deploy=kserve"]), "registry=s3", f"registry.uri={prefix}",
                       f"registry.endpoint={s3_endpoint}", *overrides])  # fmt: skip
        return replace(cfg, deploy=replace(cfg.deploy, timeout_s=10.0))

    def start(scenario: Scenario | None = None, *overrides: str) -> ScenarioApiServer:
        server = ScenarioApiServer(scenario).__enter__()
        servers.append(server)
        state.cfg = configure(*overrides, f"deploy.prometheus_url={server.url}")
        return server

    state.configure, state.start = configure, start
    yield state
    for server in servers:
        server.__exit__(None, None, None)
