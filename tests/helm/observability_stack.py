"""A live kfkit stack for the chart's observability tests: Debian's Prometheus on 127.0.0.1 scraping a real
predictor whose payload logger feeds a real drift detector (.venv-drift), under a short, bounded load.

The scrape config gives the targets the labels the chart's PodMonitors give them on a cluster: ``job`` is
``<fullname>-predictor`` / ``<fullname>-drift`` (the PodMonitors' relabeling) and ``namespace`` is the
release's (added by the Prometheus Operator from the pod's namespace), so the chart's queries run unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
DRIFT_PYTHON = REPO / ".venv-drift" / "bin" / "python"
NAME = "fraud-mlp"
RELEASE = NAMESPACE = "kfkit"  # helm template kfkit --namespace kfkit: fullname "kfkit"
N_FEATURES = 30
SHIFTED = (0, 1, 2, 3, 4)  # features the drifted traffic moves by 3 standard deviations
# Small windows, so a few hundred requests close several; labels are checked from 20 on.
DRIFT_SETTINGS = {"window_size": 40, "window_seconds": 0, "output_drift": False, "performance_min_labels": 20,
                  "performance_window": 200}  # fmt: skip


@dataclass
class Stack:
    """What the tests query: Prometheus's URL and what the load did."""

    prometheus: str
    predictor: str
    detector: str
    sent: dict[str, int]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant-query result (vector samples), raising on a refused query."""
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=10, trust_env=False)
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (promql, body)
        return body["data"]["result"]

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus's active alerts (pending or firing) from the rendered rule groups it evaluates."""
        return httpx.get(f"{self.prometheus}/api/v1/alerts", timeout=10, trust_env=False).json()["data"]["alerts"]


def publish(root: Path) -> str:
    """A servable version (weights) that is also a drift version (reference.parquet, config.json)."""
    import torch

    from kfkit.model import ModelSpec, build_model, save_model
    from kfkit.registry import publish_folder

    torch.manual_seed(0)
    names = [f"x{i:02d}" for i in range(N_FEATURES)]
    spec = ModelSpec(name=NAME, feature_names=names, hidden_dims=[8])
    folder = save_model(build_model(spec).eval(), spec, root / "model")
    import pandas as pd

    reference = np.random.default_rng(1).normal(size=(1000, N_FEATURES)).astype("float32")
    pd.DataFrame(reference, columns=names).to_parquet(folder / "reference.parquet", index=False)
    (folder / "config.json").write_text(json.dumps({"drift": DRIFT_SETTINGS}))
    return publish_folder(folder, registry_uri=f"file://{root / 'registry'}", name=NAME).uri


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{tail}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _load(predictor: str, detector: str, sent: dict[str, int]) -> None:
    """Clean traffic, then drifted traffic, with malformed requests (400) among them, then labels."""
    rng = np.random.default_rng(2)
    ids: list[str] = []
    with httpx.Client(timeout=10, trust_env=False) as client:
        for i in range(200):  # 5 windows of 40 rows: 2 clean, 3 drifted
            row = rng.normal(size=N_FEATURES)
            if i >= 80:
                row[list(SHIFTED)] += 3.0
            body = {"inputs": [{"name": "features", "shape": [1, N_FEATURES], "datatype": "FP32",
                                "data": row.round(4).tolist()}]}  # fmt: skip
            answer = client.post(predictor, json=body, headers={"x-request-id": f"req-{i}"})
            assert answer.status_code == 200, answer.text
            ids.append(f"req-{i}")
            sent["ok"] += 1
            if i % 10 == 0:
                assert client.post(predictor, content=b"{not json").status_code == 400
                sent["bad"] += 1
            time.sleep(0.04)  # ~10 s of traffic: rate() needs the counters to move between 1 s scrapes
        # Labels for the logged requests: the detector's rolling performance (kfkit_drift_performance).
        _wait(lambda: _taken(client, detector), 90, "the detector to take every payload event and test 5 windows")
        labels = [{"id": i, "label": int(rng.random() < 0.5)} for i in ids]
        answer = client.post(f"{detector}/v1/feedback", json={"labels": labels})
        assert answer.status_code == 200, answer.text
        sent["labels"] = answer.json()["joined"]


def _taken(client: httpx.Client, detector: str) -> bool:
    """Every request and response event accepted, and all five windows tested."""
    status = client.get(f"{detector}/v1/drift/status").json()
    return status["events"]["accepted"] >= 400 and status["windows"]["tested"] >= 5


@contextmanager
def running_stack(root: Path, rules: dict[str, Any], prometheus: str) -> Iterator[Stack]:
    """Detector, predictor (logging to the detector) and Prometheus (evaluating ``rules``), loaded once."""
    from kfkit.deploy.local import free_port, start_server, stop_server

    uri = publish(root)
    detector_port, prometheus_port = free_port(), free_port()
    detector = f"http://127.0.0.1:{detector_port}"
    detector_log = root / "detector.log"
    env = {**os.environ, "K_SINK": "", "OMP_NUM_THREADS": "1"}
    command = [str(DRIFT_PYTHON), "-m", "kfkit.serving.drift", "--model-uri", uri, "--port", str(detector_port),
               "--state-dir", str(root / "drift-state"), "--cache-dir", str(root / "cache")]  # fmt: skip
    with open(detector_log, "wb") as log:
        drift_process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = prom = None
    try:
        ports = {"http_port": free_port(), "grpc_port": free_port()}
        server = start_server(uri, model_name=NAME, log_path=root / "predictor.log", timeout_s=180,
                              payload_log_url=f"{detector}/", **ports)  # fmt: skip
        _wait(lambda: httpx.get(f"{detector}/v2/health/ready", timeout=2).status_code == 200, 180, "the detector",
              detector_log)  # fmt: skip
        (root / "rules.yaml").write_text(yaml.safe_dump(rules))
        scrape = [
            {"job_name": f"{RELEASE}-predictor", "static_configs": [
                {"targets": [f"127.0.0.1:{server.http_port}"], "labels": {"namespace": NAMESPACE}}]},
            {"job_name": f"{RELEASE}-drift", "static_configs": [
                {"targets": [f"127.0.0.1:{detector_port}"], "labels": {"namespace": NAMESPACE}}]},
        ]  # fmt: skip
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(root / "rules.yaml")], "scrape_configs": scrape}  # fmt: skip
        (root / "prometheus.yml").write_text(yaml.safe_dump(config))
        with open(root / "prometheus.log", "wb") as log:
            prom = subprocess.Popen(
                [prometheus, f"--config.file={root / 'prometheus.yml'}",
                 f"--web.listen-address=127.0.0.1:{prometheus_port}", f"--storage.tsdb.path={root / 'tsdb'}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )  # fmt: skip
        url = f"http://127.0.0.1:{prometheus_port}"
        ready = f"{url}/-/ready"
        _wait(lambda: httpx.get(ready, timeout=2).status_code == 200, 60, "Prometheus", root / "prometheus.log")
        stack = Stack(url, server.v2_url, detector, {"ok": 0, "bad": 0})
        _load(server.v2_url, detector, stack.sent)
        # Scrapes every second: wait for the last drifted window and the labels to reach Prometheus.
        _wait(lambda: bool(stack.query(f'kfkit_drift_performance{{job="{RELEASE}-drift"}}')), 30, "scraped labels")
        time.sleep(3)
        yield stack
    finally:
        if prom is not None:
            _stop(prom)
        if server is not None:
            stop_server(server)
        _stop(drift_process)
