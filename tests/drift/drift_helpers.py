"""Helpers of the drift tests: publish a version, a sink that records events, the detector as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIFT_PYTHON = REPO / ".venv-drift" / "bin" / "python"
FEATURES = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
REQUEST = "org.kubeflow.serving.inference.request"
RESPONSE = "org.kubeflow.serving.inference.response"


def drift_python() -> Path:
    if not DRIFT_PYTHON.exists():
        pytest.fail(f"{DRIFT_PYTHON} is missing: run `make setup` (make .venv-drift/.installed)")
    return DRIFT_PYTHON


def publish_version(root: Path, *, drift: dict | None = None, probabilities: bool = False, registry: str = "") -> str:
    """Publish a small fraud-model version (reference, model.json, config.json); its version URI."""
    import numpy as np

    from kfkit.data.sources import synthetic_fraud
    from kfkit.registry import publish_folder

    release = root / "release"
    release.mkdir(parents=True, exist_ok=True)
    reference = synthetic_fraud(n_rows=1000, seed=1)[FEATURES]
    if probabilities:
        reference["probability"] = np.random.default_rng(0).beta(1, 8, len(reference)).astype("float32")
    reference.to_parquet(release / "reference.parquet", index=False)
    spec = {"name": "fraud-mlp", "feature_names": FEATURES, "threshold": 0.5, "hidden_dims": [8]}
    (release / "model.json").write_text(json.dumps(spec))
    (release / "config.json").write_text(json.dumps({"drift": drift or {}}))
    registry = registry or f"file://{root / 'registry'}"
    return publish_folder(release, registry_uri=registry, name="fraud-mlp").uri


class Sink:
    """An HTTP server on 127.0.0.1 that records every POST (headers, JSON body) and answers 202."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                events.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": json.loads(body)})
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, ce_type: str) -> list[dict]:
        return [e for e in self.events if e["headers"].get("ce-type") == ce_type]

    def wait_for(self, ce_type: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if found := self.of_type(ce_type):
                return found[-1]
            time.sleep(0.1)
        raise AssertionError(f"no {ce_type} event at the sink within {timeout}s; got {len(self.events)} events")


class Detector:
    """``python -m kfkit.serving.drift`` in the drift environment, on a free port."""

    def __init__(self, model_uri: str, port: int, state_dir: Path, *args: str, env: dict | None = None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.command = [str(drift_python()), "-m", "kfkit.serving.drift", "--model-uri", model_uri, "--port",
                        str(port), "--state-dir", str(state_dir), *args]  # fmt: skip
        self.env = {**os.environ, "K_SINK": "", **(env or {})}
        self.log = state_dir.parent / f"detector-{port}.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> Detector:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"detector exited {self.process.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if self.get("/v2/health/ready")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"detector not ready in {timeout}s: {self.log.read_text()[-3000:]}")

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        request = urllib.request.Request(self.url + path, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)

    def get(self, path: str):
        status, body, _ = self.request("GET", path)
        return status, body

    def json(self, path: str):
        status, body = self.get(path)
        assert status == 200, (path, status, body[:300])
        return json.loads(body)

    def event(self, event_id: str, ce_type: str, body, *, source: str = "test", **headers: str) -> tuple[int, dict]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        ce = {"ce-specversion": "1.0", "ce-id": event_id, "ce-source": source, "ce-type": ce_type,
              "content-type": "application/json", **headers}  # fmt: skip
        status, answer, _ = self.request("POST", "/", data, ce)
        return status, json.loads(answer) if answer else {}

    def pair(self, event_id: str, rows, probabilities) -> None:
        """A request and its response, as the predictor's payload logger sends them (V2 JSON)."""
        rows = [list(map(float, r)) for r in rows]
        request = {"inputs": [{"name": "features", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                               "data": rows}]}  # fmt: skip
        response = {"model_name": "fraud-mlp", "outputs": [
            {"name": "probability", "shape": [len(rows)], "datatype": "FP32", "data": list(map(float, probabilities))},
            {"name": "label", "shape": [len(rows)], "datatype": "INT64", "data": [int(p >= 0.5) for p in probabilities]}
        ]}  # fmt: skip
        assert self.event(event_id, REQUEST, request)[0] == 202
        assert self.event(event_id, RESPONSE, response)[0] == 202

    def wait_windows(self, n: int, timeout: float = 60.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            windows = self.json("/v1/drift/windows?limit=0")["windows"]
            if len(windows) >= n:
                return windows
            time.sleep(0.2)
        raise AssertionError(f"fewer than {n} windows tested in {timeout}s: {self.json('/v1/drift/status')}")


def rows_of(n: int, *, seed: int, shift: float = 0.0, shifted: tuple[int, ...] = (0, 1, 2)):
    """``n`` synthetic rows (the reference's distribution), ``shifted`` columns moved by ``shift`` sd."""
    from kfkit.data.sources import synthetic_fraud

    frame = synthetic_fraud(n_rows=n, seed=seed)[FEATURES].to_numpy(dtype="float32")
    for j in shifted:
        frame[:, j] += shift * (frame[:, j].std() or 1.0)
    return frame
