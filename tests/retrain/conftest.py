"""Retrain fixtures: drift events as the detector sends them (docs/drift.md), a fake launcher, a KFP API server."""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from retrain_events import MODEL, drift_event  # noqa: F401  (beside this file)

from kfkit.config import compose


@pytest.fixture
def retrain_config(tmp_path: Path):
    """Compose a config whose work dir and registry are under tmp_path."""

    def _make(*overrides: str):
        base = [f"work_dir={tmp_path / 'work'}", f"registry.uri=file://{tmp_path / 'registry'}", *overrides]
        return compose(base), base

    return _make


class FakeLauncher:
    """Records the runs a trigger starts; a test ends them with :meth:`finish`."""

    mode = "local"

    def __init__(self) -> None:
        self.started: list[Any] = []
        self._done: dict[int, Any] = {}
        self.stopped = False

    def start(self, record, done) -> None:
        self.started.append(record)
        self._done[record.run] = done

    def finish(self, run: int, state: str = "promoted", version: str | None = "2") -> None:
        record = next(r for r in self.started if r.run == run)
        record.state, record.version, record.gate = state, version, f"fake {state}"
        self._done.pop(run)(record)

    def stop(self) -> None:
        self.stopped = True


@pytest.fixture
def fake_launcher() -> FakeLauncher:
    return FakeLauncher()


class KfpScenario:
    """A Kubeflow Pipelines v2beta1 REST API on 127.0.0.1, scripted per test, for the real kfp.Client.

    It answers the calls kfp.Client makes to start and follow a run (healthz, experiments list/create,
    runs create/get) with the v2beta1 JSON shapes; each created run goes RUNNING on the first read, then
    ends as ``outcome`` says: SUCCEEDED, or FAILED with the named task failed.
    """

    def __init__(self, outcome: str = "SUCCEEDED", failed_task: str = "gate") -> None:
        self.outcome, self.failed_task = outcome, failed_task
        self.requests: list[tuple[str, str, Any]] = []
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.reads: dict[str, int] = {}
        self.on_finish = None  # called once a run ends (e.g. to move the production alias as publish would)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> KfpScenario:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _answer(self, method: str, path: str, query: str, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, body))
        if (method, path) == ("GET", "/apis/v2beta1/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", "/apis/v2beta1/experiments"):
            predicates = json.loads(parse_qs(query).get("filter", ['{"predicates": []}'])[0])["predicates"]
            names = {p.get("string_value", p.get("stringValue")) for p in predicates if p.get("key") == "display_name"}
            found = [e for e in self.experiments.values() if e["display_name"] in names]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", "/apis/v2beta1/experiments"):
            experiment = {
                **body,
                "experiment_id": str(uuid.uuid4()),
                "created_at": "2026-12-01T10:00:00Z",
                "storage_state": "AVAILABLE",
            }
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if (method, path) == ("POST", "/apis/v2beta1/runs"):
            if body.get("experiment_id") not in self.experiments:
                return 400, {"error_message": "experiment not found", "code": 3}
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": "2026-12-01T10:00:00Z"}
            self.runs[run["run_id"]] = run
            return 200, run
        match = re.fullmatch(r"/apis/v2beta1/runs/([\w-]+)", path)
        if method == "GET" and match and match.group(1) in self.runs:
            run = self.runs[match.group(1)]
            self.reads[run["run_id"]] = reads = self.reads.get(run["run_id"], 0) + 1
            if reads == 1:
                run["state"] = "RUNNING"
            elif run["state"] == "RUNNING":
                run["state"] = self.outcome
                tasks = [{"display_name": name, "state": "SUCCEEDED"} for name in ("prep", "train", "evaluate")]
                if self.outcome == "FAILED":
                    tasks.append(
                        {
                            "display_name": self.failed_task,
                            "state": "FAILED",
                            "error": {"message": "gate rejected breast-cancer-mlp: roc_auc 0.51 < floor 0.8"},
                        }
                    )
                run["run_details"] = {"task_details": tasks}
                run["finished_at"] = "2026-12-01T10:05:00Z"
                if self.on_finish:
                    self.on_finish(run)
            return 200, run
        return 404, {"error_message": f"no route {method} {path}", "code": 5}

    def _handler(self):
        scenario = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                status, document = scenario._answer(method, path, query, body)
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def log_message(self, *args):
                pass

        return Handler


@pytest.fixture
def kfp_scenario():
    return KfpScenario
