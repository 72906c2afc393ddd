"""A scenario Kubernetes API server on 127.0.0.1: enough of the API server and of KServe's controller to drive
the real kubernetes client through deploys and canaries, where no cluster exists.

What it answers, as the API server does:

- ``PATCH`` with ``Content-Type: application/apply-patch+yaml`` on InferenceServices and ServingRuntimes:
  server-side apply. ``fieldManager`` is required; the fields each manager applied are tracked, fields a
  manager stops applying are removed, another manager's fields are kept, and a conflicting value from
  another manager is 409 unless ``force=true``. ``metadata.generation`` moves only when ``spec`` changes;
  ``resourceVersion`` on every change; ``metadata.managedFields`` names the managers. With
  ``fieldValidation=Strict`` the object is checked against the real CRD schema (../shared/crds): an unknown
  field is refused the way the API server refuses it (``.spec.canary: field not declared in schema`` when the
  scenario plays a KServe older than 0.20, whose CRD has no ``spec.canary``).
- ``GET`` of those objects, of Knative Revisions, of pods by label selector and of a container's log.
- ``GET /api/v1/query``: Prometheus's instant query API, answered by the scenario (canary health).

And as KServe's controller does, on each GET of an InferenceService (one poll): the status keeps describing
the previous generation (a stale Ready included) for ``ready_after`` polls, then the new generation is
reconciled: a Knative revision per predictor spec, traffic split by ``canaryTrafficPercent`` between the new
revision and ``previousRolledoutRevision`` (tags latest/prev with tag routing), or ``spec.canary[]`` with
``canaryStatuses`` in Standard mode, and Ready; or, for a version the scenario marks as failing, the
conditions, revision and pods of that failure (image pull, storage initializer, quota, readiness, crash).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO.parent / "shared" / "crds"
KINDS = {
    ("serving.kserve.io", "v1beta1", "inferenceservices"): ("InferenceService", "kserve.inferenceservices.yaml"),
    ("serving.kserve.io", "v1alpha1", "servingruntimes"): ("ServingRuntime", "kserve.servingruntimes.yaml"),
}
FAILURES = ("image-pull", "storage-initializer", "quota", "readiness", "crash", "model-load")
_SCHEMAS: dict[tuple[str, bool], Any] = {}


def _validator(plural: str, *, canary: bool) -> Any:
    """A jsonschema validator of the real CRD (``canary=False``: as KServe < 0.20, without spec.canary)."""
    key = (plural, canary)
    if key not in _SCHEMAS:
        import jsonschema
        import yaml

        spec = importlib.util.spec_from_file_location("crd_validate", CRDS / "validate.py")
        validate = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(validate)
        kind_file = next(f for (_, _, p), (_, f) in KINDS.items() if p == plural)
        crd = yaml.load((CRDS / kind_file).read_text(), Loader=validate.Loader)
        raw = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        if not canary and plural == "inferenceservices":
            raw["properties"]["spec"]["properties"].pop("canary", None)
        schema = validate.to_jsonschema(raw)
        schema["type"] = "object"
        validate.add_object_header(schema)
        _SCHEMAS[key] = (jsonschema.Draft4Validator(schema), validate)
    return _SCHEMAS[key]


def _leaves(obj: Any, prefix: tuple = ()) -> dict[tuple, Any]:
    """Field path -> value; lists are atomic (one field), as in the CRDs' schemas."""
    if isinstance(obj, dict) and obj:
        out: dict[tuple, Any] = {}
        for key, value in obj.items():
            out.update(_leaves(value, (*prefix, key)))
        return out
    return {prefix: obj}


def _applied_fields(config: dict[str, Any]) -> dict[tuple, Any]:
    fields = {}
    for path, value in _leaves({k: v for k, v in config.items() if k not in ("apiVersion", "kind", "status")}).items():
        if path[0] == "metadata" and (len(path) < 2 or path[1] not in ("labels", "annotations")):
            continue
        fields[path] = value
    return fields


def _delete(obj: dict[str, Any], path: tuple) -> None:
    node = obj
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)
    # prune empty parents, as the API server drops emptied maps of an applied config
    for depth in range(len(path) - 1, 0, -1):
        parent = obj
        for key in path[: depth - 1]:
            parent = parent[key]
        if parent.get(path[depth - 1]) == {}:
            parent.pop(path[depth - 1])


def _set(obj: dict[str, Any], path: tuple, value: Any) -> None:
    node = obj
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = copy.deepcopy(value)


def _fields_v1(paths: set[tuple]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path in sorted(paths):
        node = tree
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return tree


@dataclass
class Scenario:
    """How the fake controller behaves."""

    ready_after: int = 2
    """Polls (GETs) after an apply before the new generation is reconciled."""
    failures: dict[str, str] = field(default_factory=dict)
    """Version -> failure (one of FAILURES) its revision or pods show once reconciled."""
    never_ready: bool = False
    """Reconcile observedGeneration but never report Ready (a timeout)."""
    kserve_canary: bool = True
    """The CRD has spec.canary (KServe 0.20+)."""
    prometheus: Callable[[str], float | None] | None = None
    """Answers instant queries (None: empty result)."""


class ScenarioApiServer:
    """The server (a context manager): ``client()`` is a kubernetes ApiClient pointed at it."""

    def __init__(self, scenario: Scenario | None = None) -> None:
        self.scenario = scenario or Scenario()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.managers: dict[tuple[str, str, str], dict[str, dict[tuple, Any]]] = {}
        self.revisions: dict[str, dict[str, Any]] = {}
        self.pods: list[dict[str, Any]] = []
        self.logs: dict[tuple[str, str], str] = {}
        self.requests: list[dict[str, Any]] = []
        self.queries: list[str] = []
        self._polls: dict[tuple[str, str, str], int] = {}
        self._rv = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": method, "path": url.path, "query": query,
                          "content_type": self.headers.get("Content-Type", "")}  # fmt: skip
                with server._lock:
                    server.requests.append(record)
                    status, answer, content_type = server.answer(method, url.path, query, body, record)
                self._send(status, answer, content_type)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._handle("GET")

            def do_PATCH(self) -> None:  # noqa: N802
                self._handle("PATCH")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = self.url
        return client.ApiClient(configuration)

    def __enter__(self) -> ScenarioApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # ---- the API -------------------------------------------------------------------------------------

    @staticmethod
    def _status(code: int, reason: str, message: str) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason,
                "code": code}  # fmt: skip

    def answer(self, method: str, path: str, query: dict[str, str], body: bytes, record: dict) -> tuple:
        parts = path.strip("/").split("/")
        if path == "/api/v1/query":
            self.queries.append(query.get("query", ""))
            value = self.scenario.prometheus(query.get("query", "")) if self.scenario.prometheus else None
            result = [] if value is None else [{"metric": {}, "value": [0, repr(float(value))]}]
            return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}, "application/json"
        if parts[:2] == ["api", "v1"] and len(parts) >= 5 and parts[4] == "pods":
            if len(parts) == 7 and parts[6] == "log":
                return 200, self.logs.get((parts[5], query.get("container", "")), ""), "text/plain"
            selector = dict(kv.split("=", 1) for kv in query.get("labelSelector", "").split(",") if kv)
            items = [p for p in self.pods
                     if all(p["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]  # fmt: skip
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}, "application/json"
        if len(parts) == 7 and parts[0] == "apis" and parts[3] == "namespaces":
            group, version, namespace, plural, name = parts[1], parts[2], parts[4], parts[5], parts[6]
            if (group, version, plural) == ("serving.knative.dev", "v1", "revisions") and method == "GET":
                revision = self.revisions.get(name)
                if revision is None:
                    return 404, self._status(404, "NotFound", f'revisions "{name}" not found'), "application/json"
                return 200, revision, "application/json"
            if (group, version, plural) in KINDS:
                key = (plural, namespace, name)
                if method == "PATCH":
                    return self._apply(key, (group, version, plural), query, body, record)
                obj = self.objects.get(key)
                if obj is None:
                    message = f'{plural}.{group} "{name}" not found'
                    return 404, self._status(404, "NotFound", message), "application/json"
                if plural == "inferenceservices":
                    self._reconcile(key)
                return 200, obj, "application/json"
        return 404, self._status(404, "NotFound", f"the server could not find {path}"), "application/json"

    def _apply(self, key: tuple, api: tuple, query: dict[str, str], body: bytes, record: dict) -> tuple:
        plural, namespace, name = key
        kind = KINDS[api][0]
        if record["content_type"] != "application/apply-patch+yaml":
            refusal = self._status(415, "UnsupportedMediaType", "this scenario answers apply patches only")
            return 415, refusal, "application/json"
        manager = query.get("fieldManager")
        if not manager:
            message = 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required for apply'
            return 422, self._status(422, "Invalid", message), "application/json"
        import yaml

        config = yaml.safe_load(body)
        if query.get("fieldValidation") == "Strict" and CRDS.is_dir():
            validator, validate = _validator(plural, canary=self.scenario.kserve_canary)
            lines = [line for e in validator.iter_errors(validate.drop_nulls(config)) for line in validate.describe(e)]
            unknown = [line for line in lines if "unknown field" in line]
            if unknown:
                path, _, field_name = unknown[0].partition(': unknown field "')
                where = f"{path.lstrip('$')}.{field_name.rstrip(chr(34))}"
                message = (f"failed to create typed patch object ({namespace}/{name}; {api[0]}/{api[1]}, Kind={kind}): "
                           f"{where}: field not declared in schema")  # fmt: skip
                return 400, self._status(400, "BadRequest", message), "application/json"
            if lines:
                message = f'{kind}.{api[0]} "{name}" is invalid: ' + "; ".join(lines)
                return 422, self._status(422, "Invalid", message), "application/json"
        fields = _applied_fields(config)
        owners = self.managers.setdefault(key, {})
        live = copy.deepcopy(self.objects.get(key) or {})
        if query.get("force") != "true":
            for other, owned in owners.items():
                clash = sorted(p for p in fields if other != manager and p in owned and owned[p] != fields[p])
                if clash:
                    message = f'Apply failed with 1 conflict: conflict with "{other}": .{".".join(clash[0])}'
                    return 409, self._status(409, "Conflict", message), "application/json"
        for other in list(owners):
            if other != manager:
                owners[other] = {p: v for p, v in owners[other].items() if p not in fields}  # forced away
        previous = owners.get(manager, {})
        others = {p for m, owned in owners.items() if m != manager for p in owned}
        for path in set(previous) - set(fields) - others:
            _delete(live, path)
        for path, value in fields.items():
            _set(live, path, value)
        owners[manager] = fields
        old = self.objects.get(key)
        live.setdefault("metadata", {}).update({"name": name, "namespace": namespace})
        live["apiVersion"], live["kind"] = config["apiVersion"], config["kind"]
        generation = (old or {}).get("metadata", {}).get("generation", 0)
        if old is None or old.get("spec") != live.get("spec"):
            generation += 1
            self._polls[key] = 0
        self._rv += 1
        live["metadata"]["generation"] = generation
        live["metadata"]["resourceVersion"] = str(self._rv)
        live["metadata"]["managedFields"] = [
            {"manager": m, "operation": "Apply", "apiVersion": f"{api[0]}/{api[1]}", "fieldsType": "FieldsV1",
             "fieldsV1": _fields_v1(set(owned))}
            for m, owned in owners.items()
        ]  # fmt: skip
        if old is not None and "status" in old:
            live["status"] = old["status"]
        self.objects[key] = live
        return 200, live, "application/json"

    # ---- the controller ------------------------------------------------------------------------------

    def _reconcile(self, key: tuple) -> None:
        isvc = self.objects[key]
        self._polls[key] = self._polls.get(key, 0) + 1
        generation = isvc["metadata"]["generation"]
        status = isvc.setdefault("status", {})
        if status.get("observedGeneration") == generation or self._polls[key] < self.scenario.ready_after:
            return
        _, namespace, name = key
        spec = isvc["spec"]
        standard = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode") in (
            "Standard", "RawDeployment")  # fmt: skip
        version = isvc["metadata"].get("labels", {}).get("kfkit.io/model-version", "")
        canary = spec.get("canary") or []
        if canary:
            version = isvc["metadata"].get("annotations", {}).get("kfkit.io/canary-version", version)
        failure = self.scenario.failures.get(version)
        status["observedGeneration"] = generation
        status["url"] = f"http://{name}.{namespace}.example.com"
        status["address"] = {"url": f"http://{name}.{namespace}.svc.cluster.local"}
        predictor = status.setdefault("components", {}).setdefault("predictor", {})
        revision = ""
        if not standard:
            revision = self._knative_revision(isvc, predictor, failure)
        else:
            predictor.pop("traffic", None)
            status["canaryStatuses"] = [
                {"name": c["predictor"].get("name", "canary"), "ready": failure is None,
                 "trafficPercent": c.get("trafficPercent", 0)}
                for c in canary
            ]  # fmt: skip
            if not canary:
                status.pop("canaryStatuses")
        self._pods(namespace, name, revision, version, failure)
        if failure is not None:
            status["conditions"] = self._failed_conditions(failure, revision)
            if failure == "model-load":
                status["modelStatus"] = {"transitionStatus": "BlockedByFailedLoad", "states": {
                    "activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"}, "lastFailureInfo": {
                    "reason": "ModelLoadFailed", "message": "model.safetensors: sha256 mismatch",
                    "location": "kserve-container", "modelRevisionName": revision}}  # fmt: skip
            return
        status.pop("modelStatus", None)
        if self.scenario.never_ready:
            status["conditions"] = [{"type": "Ready", "status": "Unknown", "reason": "Deploying"}]
            return
        status["conditions"] = [{"type": t, "status": "True"} for t in ("IngressReady", "PredictorReady", "Ready")]

    def _knative_revision(self, isvc: dict, predictor: dict, failure: str | None) -> str:
        """A revision per distinct predictor spec; traffic between it and the previous rolled-out one."""
        name = isvc["metadata"]["name"]
        spec = {k: v for k, v in isvc["spec"]["predictor"].items() if k != "canaryTrafficPercent"}
        known = [r for r in self.revisions.values() if r["spec"] == spec and r["metadata"]["name"].startswith(name)]
        if known:
            revision = known[0]["metadata"]["name"]
        else:
            revision = f"{name}-predictor-{len(self.revisions) + 1:05d}"
            self.revisions[revision] = {"apiVersion": "serving.knative.dev/v1", "kind": "Revision",
                                        "metadata": {"name": revision}, "spec": copy.deepcopy(spec),
                                        "status": {"conditions": []}}  # fmt: skip
        self.revisions[revision]["status"]["conditions"] = self._revision_conditions(failure)
        predictor["latestCreatedRevision"] = revision
        if failure is not None:
            return revision
        percent = isvc["spec"]["predictor"].get("canaryTrafficPercent")
        rolled_out = predictor.get("latestRolledoutRevision")
        tags = isvc["metadata"].get("annotations", {}).get("serving.kserve.io/enable-tag-routing") == "true"
        host = f"{name}-predictor.{isvc['metadata']['namespace']}.example.com"
        predictor["latestReadyRevision"] = revision
        if percent is None or rolled_out is None or rolled_out == revision:
            if rolled_out and rolled_out != revision:
                predictor["previousRolledoutRevision"] = rolled_out
            predictor["latestRolledoutRevision"] = revision
            predictor["traffic"] = [{"revisionName": revision, "percent": 100, "latestRevision": True}]
            return revision
        predictor["previousRolledoutRevision"] = rolled_out
        latest = {"revisionName": revision, "percent": int(percent), "latestRevision": True}
        previous = {"revisionName": rolled_out, "percent": 100 - int(percent), "latestRevision": False}
        if tags:
            latest |= {"tag": "latest", "url": f"http://latest-{host}"}
            previous |= {"tag": "prev", "url": f"http://prev-{host}"}
        predictor["traffic"] = [t for t in (latest, previous) if t["percent"] or t.get("tag")]
        return revision

    @staticmethod
    def _revision_conditions(failure: str | None) -> list[dict[str, Any]]:
        if failure == "image-pull":
            return [{"type": "ContainerHealthy", "status": "Unknown"},
                    {"type": "ResourcesAvailable", "status": "False", "reason": "ImagePullBackOff",
                     "message": 'Back-off pulling image "ghcr.io/kfkit/kfkit:no-such-tag"'},
                    {"type": "Ready", "status": "False", "reason": "ImagePullBackOff"}]  # fmt: skip
        if failure == "quota":
            message = ('pods "fraud-predictor-00002-deployment-7d9c-x2" is forbidden: exceeded quota: compute, '
                       "requested: nvidia.com/gpu=1, used: nvidia.com/gpu=4, limited: nvidia.com/gpu=4")  # fmt: skip
            return [{"type": "ResourcesAvailable", "status": "False", "reason": "FailedCreate", "message": message},
                    {"type": "Ready", "status": "False", "reason": "FailedCreate"}]  # fmt: skip
        if failure == "crash":
            return [{"type": "ContainerHealthy", "status": "False", "reason": "ExitCode1",
                     "message": "Container failed with: kfkit.errors.ModelLoadError: no model.json"},
                    {"type": "Ready", "status": "False", "reason": "ExitCode1"}]  # fmt: skip
        return [{"type": "Ready", "status": "True" if failure is None else "Unknown"}]

    @staticmethod
    def _failed_conditions(failure: str, revision: str) -> list[dict[str, Any]]:
        if failure in ("image-pull", "quota", "crash"):
            message = f'Revision "{revision}" failed with message: see the revision.'
            return [{"type": "PredictorReady", "status": "False", "reason": "RevisionFailed", "message": message},
                    {"type": "Ready", "status": "False", "reason": "RevisionFailed", "message": message}]  # fmt: skip
        return [{"type": "PredictorReady", "status": "Unknown", "reason": "Deploying"},
                {"type": "Ready", "status": "Unknown", "reason": "Deploying"}]  # fmt: skip

    def _pods(self, namespace: str, name: str, revision: str, version: str, failure: str | None) -> None:
        labels = {"serving.kserve.io/inferenceservice": name, "component": "predictor"}
        if revision:
            labels["serving.knative.dev/revision"] = revision
        pod_name = f"{revision or name + '-predictor'}-deployment-7d9c-x2"
        init = {"name": "storage-initializer", "ready": True, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}  # fmt: skip
        main: dict[str, Any] = {"name": "kserve-container", "ready": True, "restartCount": 0,
                                "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}}  # fmt: skip
        conditions: list[dict[str, Any]] = []
        if failure == "image-pull":
            main = {
                "name": "kserve-container",
                "ready": False,
                "restartCount": 0,
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "ghcr.io/kfkit/kfkit:no-such-tag"',
                    }
                },
            }
        elif failure == "storage-initializer":
            init = {"name": "storage-initializer", "ready": False, "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message":
                                  "botocore.exceptions.ClientError: An error occurred (AccessDenied) when calling "
                                  "the ListObjectsV2 operation: Access Denied"}}}  # fmt: skip
            main = {"name": "kserve-container", "ready": False, "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}}}  # fmt: skip
        elif failure == "readiness":
            main = {"name": "kserve-container", "ready": False, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-12-01T10:00:00Z"}}}  # fmt: skip
            self.logs[(pod_name, "kserve-container")] = "INFO loading model\nINFO still loading\n"
        elif failure == "crash":
            main = {"name": "kserve-container", "ready": False, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s"}},
                    "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}  # fmt: skip
            self.logs[(pod_name, "kserve-container")] = "Traceback ...\nkfkit.errors.ModelLoadError: no model.json\n"
        elif failure == "quota":
            return  # the ReplicaSet could not create the pod at all
        pod = {"metadata": {"name": pod_name, "namespace": namespace, "labels": labels},
               "status": {"phase": "Running" if failure in (None, "readiness") else "Pending", "conditions": conditions,
                          "initContainerStatuses": [init], "containerStatuses": [main]}}  # fmt: skip
        self.pods = [p for p in self.pods if p["metadata"]["name"] != pod_name] + [pod]
        if failure is None and version:
            pod["metadata"]["labels"]["kfkit.io/model-version"] = version
