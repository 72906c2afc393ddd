"""The PromQL of KEDA and of the canary checks, run by a real Prometheus (Debian's, a plain process on 127.0.0.1)
scraping two live kfkit servers (versions 1 and 2 of one model) under load."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from kfkit.config import compose
from kfkit.deploy import promql
from kfkit.deploy.inference_service import build_inference_service
from kfkit.deploy.local import free_port, start_server, stop_server
from kfkit.deploy.rollout import PrometheusMetrics

pytestmark = pytest.mark.slow  # two model servers, Prometheus, ~15 s of load

NAME = "breast-cancer-mlp"
NAMESPACE = "kfkit"
N_FEATURES = 30


def _publish(root: Path, registry: str, seed: int) -> str:
    import torch

    from kfkit.model import ModelSpec, build_model, save_model
    from kfkit.registry import publish_folder

    torch.manual_seed(seed)
    spec = ModelSpec(name=NAME, feature_names=[f"x{i:02d}" for i in range(N_FEATURES)], hidden_dims=[8])
    model_dir = save_model(build_model(spec).eval(), spec, root / f"model-{seed}")
    return publish_folder(model_dir, registry_uri=registry, name=NAME).uri


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """Two kfkit servers (versions 1 and 2), Prometheus scraping both every second, and load on both."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("missing tool: prometheus (Debian package prometheus; scripts/install_system_tools.sh installs it)")
    root = tmp_path_factory.mktemp("prometheus")
    registry = f"file://{root}/registry"
    uris = [_publish(root, registry, seed) for seed in (1, 2)]
    servers = []
    try:
        for i, uri in enumerate(uris, 1):
            servers.append(start_server(uri, model_name=NAME, http_port=free_port(), grpc_port=free_port(),
                                        log_path=root / f"server-{i}.log", timeout_s=180))  # fmt: skip
        targets = [f"127.0.0.1:{s.http_port}" for s in servers]
        scrape = {"job_name": "kfkit", "scrape_interval": "1s",
                  "static_configs": [{"targets": targets, "labels": {"namespace": NAMESPACE}}]}  # fmt: skip
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": [scrape]}
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        process = subprocess.Popen(
            [prometheus, f"--config.file={root / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={root / 'tsdb'}"],
            stdout=subprocess.DEVNULL, stderr=open(root / "prometheus.log", "wb"),
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, "Prometheus ready")
            load = Load(servers)
            load.start()
            try:
                # 12 scrapes of the load: enough for the 10s windows below to be full.
                time.sleep(12)
                yield {"url": url, "servers": servers, "load": load}
            finally:
                load.stop()
        finally:
            process.terminate()
            process.wait(30)
    finally:
        for server in servers:
            stop_server(server)


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


class Load:
    """Threads sending V2 requests to both servers, and malformed ones (answered 400) to version 2."""

    def __init__(self, servers) -> None:
        self.servers, self.stopped, self.sent, self.bad = servers, threading.Event(), 0, 0
        self.threads = [threading.Thread(target=self._run, args=(s, s is servers[-1]), daemon=True) for s in servers]

    def _run(self, server, also_bad: bool) -> None:
        rows = np.random.default_rng(0).normal(size=(1, N_FEATURES)).round(3).tolist()
        body = {"inputs": [{"name": "features", "shape": [1, N_FEATURES], "datatype": "FP32", "data": rows}]}
        with httpx.Client(timeout=10, trust_env=False) as client:
            while not self.stopped.is_set():
                assert client.post(server.v2_url, json=body).status_code == 200
                self.sent += 1
                if also_bad and self.sent % 5 == 0:
                    assert client.post(server.v2_url, content=b"{not json").status_code == 400
                    self.bad += 1
                time.sleep(0.01)

    def start(self) -> None:
        self.started = time.monotonic()
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(10)


def query(stack, promql_text: str) -> float | None:
    from kfkit.deploy.promql import PrometheusClient

    return PrometheusClient(stack["url"]).query(promql_text)


def test_keda_queries_return_the_predictors_load(stack):
    cfg = compose(["deploy=kserve-standard"])
    isvc = build_inference_service(cfg, storage_uri="s3://kfkit-models/breast-cancer-mlp/1")
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    keda = metric["external"]["metric"]["query"]  # exactly what the manifest hands KEDA
    assert keda == promql.request_rate(NAMESPACE, NAME)
    assert query(stack, keda) > 0  # its 1m window is not full yet: rate() reads low on a young series
    load = stack["load"]
    client_rate = (load.sent + load.bad) / (time.monotonic() - load.started)
    rps = query(stack, promql.request_rate(NAMESPACE, NAME, window="10s"))  # the same query on a full window
    assert rps is not None and 0.5 * client_rate < rps < 1.5 * client_rate, (rps, client_rate)
    in_flight = query(
        stack, promql.in_flight(NAMESPACE, NAME, window="10s")
    )  # concurrency: seconds of latency per second
    assert in_flight is not None and 0 < in_flight < 2  # two sequential clients: at most ~2 in flight


def test_canary_queries_tell_the_versions_apart(stack):
    per_version = {v: query(stack, promql.version_request_rate(NAMESPACE, NAME, v, "10s")) for v in ("1", "2")}
    assert all(rate and rate > 0 for rate in per_version.values()), per_version
    total = query(stack, promql.request_rate(NAMESPACE, NAME, window="10s"))
    assert abs(sum(per_version.values()) - total) < 0.2 * total, (per_version, total)
    assert query(stack, promql.version_request_rate(NAMESPACE, NAME, "7")) is None  # no such version: no series
    # Version 2 also answers 400s: they are traffic but not server errors.
    client_errors = f'sum(rate(kfkit_requests_total{{namespace="{NAMESPACE}",model="{NAME}",status="400"}}[2m]))'
    assert query(stack, client_errors) > 0
    for version in ("1", "2"):
        assert query(stack, promql.error_rate(NAMESPACE, NAME, version)) == 0.0
        p99 = query(stack, promql.p99_seconds(NAMESPACE, NAME, version))
        assert p99 is not None and 0 < p99 < 1.0, p99


def test_the_rollouts_metric_source_reads_them(stack):
    metrics = PrometheusMetrics(stack["url"], namespace=NAMESPACE, model=NAME)
    assert metrics.error_rate("2") == 0.0
    assert 0 < metrics.p99_ms("2") < 1000
    assert metrics.request_rate("2") > 0
    assert metrics.error_rate("9") is None  # no traffic is no evidence, not a 0% error rate
