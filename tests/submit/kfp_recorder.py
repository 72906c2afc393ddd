"""A Kubeflow Pipelines v2beta1 REST API on 127.0.0.1 that records every call, for driving the real kfp.Client.

It answers the calls kfp.Client 2.17 makes to upload a pipeline or a version, file a run or a recurring run
and follow a run, with the v2beta1 JSON shapes, and keeps (method, path, query, body, Authorization) of each.
A run reads RUNNING once, then ends as ``outcome`` says (SUCCEEDED, or FAILED with ``failed_task`` failed).
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["KfpRecorder", "Call"]

API = "/apis/v2beta1"
_NOW = "2026-12-01T10:00:00Z"


@dataclass
class Call:
    """One request the server got."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    """JSON body; for an upload, {"uploadfile": <the YAML text>}."""
    authorization: str | None


class KfpRecorder:
    """The server; use as a context manager. ``multi_user`` is what /healthz says."""

    def __init__(self, outcome: str = "SUCCEEDED", *, failed_task: str = "train", multi_user: bool = False) -> None:
        self.outcome, self.failed_task, self.multi_user = outcome, failed_task, multi_user
        self.calls: list[Call] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.on_run_read = None  # called with the run before each read of it is answered
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Base URL (the kfp host)."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> KfpRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def called(self, method: str, path: str) -> list[Call]:
        """The calls of ``method`` to ``path`` (relative to /apis/v2beta1), in order."""
        return [c for c in self.calls if (c.method, c.path) == (method, API + path)]

    # -- the API ---------------------------------------------------------------------------------------------

    def _answer(self, call: Call) -> tuple[int, Any]:
        method, path, q, body = call.method, call.path.removeprefix(API), call.query, call.body
        if (method, path) == ("GET", "/healthz"):
            return 200, {"multi_user": self.multi_user}
        if self.multi_user and path in ("/pipelines/upload", "/experiments") and method == "POST":
            namespace = q.get("namespace") if path.endswith("upload") else (body or {}).get("namespace")
            if not namespace:
                return 400, {"error_message": "namespace is required in multi-user mode", "code": 3}
        if (method, path) == ("GET", "/pipelines"):
            return 200, self._listed("pipelines", self.pipelines.values(), q)
        if (method, path) == ("POST", "/pipelines/upload"):
            pipeline = {"pipeline_id": str(uuid.uuid4()), "display_name": q["name"], "created_at": _NOW}
            pipeline |= {"namespace": q["namespace"]} if q.get("namespace") else {}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self.versions[pipeline["pipeline_id"]] = [self._version(pipeline["pipeline_id"], q["name"], body)]
            return 200, pipeline
        if (method, path) == ("POST", "/pipelines/upload_version"):
            if q.get("pipelineid") not in self.pipelines:
                return 404, {"error_message": f"pipeline {q.get('pipelineid')} not found", "code": 5}
            if any(v["display_name"] == q["name"] for v in self.versions[q["pipelineid"]]):
                return 409, {"error_message": f"version {q['name']} already exists", "code": 6}
            version = self._version(q["pipelineid"], q["name"], body)
            self.versions[q["pipelineid"]].append(version)
            return 200, version
        if method == "GET" and (m := re.fullmatch(r"/pipelines/([\w-]+)/versions", path)):
            versions = list(reversed(self.versions.get(m.group(1), [])))  # newest first, as sort_by desc asks
            return 200, {"pipeline_versions": versions, "total_size": len(versions)}
        if (method, path) == ("GET", "/experiments"):
            return 200, self._listed("experiments", self.experiments.values(), q)
        if (method, path) == ("POST", "/experiments"):
            experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": _NOW, "storage_state": "AVAILABLE"}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if (method, path) == ("POST", "/runs"):
            if body.get("experiment_id") not in self.experiments:
                return 400, {"error_message": "experiment not found", "code": 3}
            run = {**body, "run_id": str(uuid.uuid4()), "state": "PENDING", "created_at": _NOW}
            self.runs[run["run_id"]] = run
            return 200, run
        if method == "GET" and (m := re.fullmatch(r"/runs/([\w-]+)", path)) and m.group(1) in self.runs:
            if self.on_run_read is not None:
                self.on_run_read(self.runs[m.group(1)])
            return 200, self._advance(self.runs[m.group(1)])
        if (method, path) == ("GET", "/recurringruns"):
            if self.multi_user and not (q.get("namespace") or q.get("experiment_id")):
                # what KFP answers kfp.Client().list_recurring_runs() in multi-user mode: it sends no namespace
                return 400, {
                    "error_message": "ListRecurringRuns must filter by namespace in multi-user mode",
                    "code": 3,
                }
            return 200, self._listed("recurringRuns", self.recurring.values(), q)
        if (method, path) == ("POST", "/recurringruns"):
            recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "status": "ENABLED", "created_at": _NOW}
            self.recurring[recurring["recurring_run_id"]] = recurring
            return 200, recurring
        if method == "DELETE" and (m := re.fullmatch(r"/recurringruns/([\w-]+)", path)):
            return (200, {}) if self.recurring.pop(m.group(1), None) else (404, {"error_message": "no such", "code": 5})
        return 404, {"error_message": f"no route {method} {path}", "code": 5}

    def _listed(self, key: str, items: Any, query: dict[str, str]) -> dict:
        """A list answer, filtered by display_name (EQUALS predicates) and by namespace when one is asked for."""
        predicates = json.loads(query.get("filter") or '{"predicates": []}')["predicates"]
        names = {p.get("string_value", p.get("stringValue")) for p in predicates if p.get("key") == "display_name"}
        found = [i for i in items if not names or i.get("display_name") in names]
        if query.get("namespace"):
            found = [i for i in found if self._namespace_of(i) in (None, query["namespace"])]
        return {key: found, "total_size": len(found)} if found else {}

    def _namespace_of(self, item: dict) -> str | None:
        if "experiment_id" in item and "namespace" not in item:  # a recurring run lives in its experiment's
            return self.experiments.get(item["experiment_id"], {}).get("namespace")
        return item.get("namespace")

    def _version(self, pipeline_id: str, name: str, body: Any) -> dict:
        spec = body.get("uploadfile", "") if isinstance(body, dict) else ""
        return {"pipeline_id": pipeline_id, "pipeline_version_id": str(uuid.uuid4()), "display_name": name,
                "created_at": _NOW, "package_text": spec}  # fmt: skip

    def _advance(self, run: dict) -> dict:
        if run["state"] == "PENDING":
            run["state"] = "RUNNING"
        elif run["state"] == "RUNNING":
            run["state"] = self.outcome
            tasks = [{"display_name": name, "state": "SUCCEEDED"} for name in ("prep",)]
            if self.outcome == "FAILED":
                error = {"message": "torchrun exited with status 1 (rank 0: CUDA out of memory)"}
                tasks.append({"display_name": self.failed_task, "state": "FAILED", "error": error})
            run["run_details"] = {"task_details": tasks}
            run["finished_at"] = "2026-12-01T10:05:00Z"
        return run

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                content_type = self.headers.get("content-type", "")
                if content_type.startswith("multipart/form-data"):
                    body: Any = _multipart(content_type, raw)
                else:
                    body = json.loads(raw) if raw else None
                call = Call(self.command, path, {k: v[0] for k, v in parse_qs(query).items()}, body,
                            self.headers.get("authorization"))  # fmt: skip
                with server._lock:
                    server.calls.append(call)
                    status, document = server._answer(call)
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _serve  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def _multipart(content_type: str, raw: bytes) -> dict[str, str]:
    """The form fields of a multipart/form-data body (kfp's upload sends the YAML as ``uploadfile``)."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    return {
        part.get_param("name", header="content-disposition"): part.get_payload(decode=True).decode()
        for part in message.iter_parts()
    }
