"""Deploy a registry version to KServe: server-side apply, wait for Ready of that generation, name a failure's cause.

The deploy step of the pipeline (``deploy.target=kserve``) and ``kfkit deploy`` both come here:

1. the version is read from the registry and the ServingRuntime and InferenceService are built with the typed
   builder (:mod:`kfkit.deploy.inference_service`), carrying its lineage as ``kfkit.io/*`` labels and annotations;
2. each object is applied with server-side apply, field manager ``kfkit`` (fields kfkit stops setting are
   removed, fields other managers own are kept; kfkit forces its own fields back);
3. the InferenceService is polled until ``status.observedGeneration`` reaches the generation the apply
   returned and its Ready condition is True: a Ready left over from the previous spec does not count;
4. a failure is named from the InferenceService's conditions and model status, the failing Knative revision
   and the pods (image pull, storage initializer, quota, the server exiting, readiness), with what to do.

Inside a pod the service account's credentials are used, elsewhere the kubeconfig's current context.

A little over 400 lines: the kubernetes client wrapper, the object set and the wait belong to one apply;
why a generation is not Ready is :mod:`kfkit.deploy.diagnosis`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kfkit import k8s as kube
from kfkit.deploy import diagnosis
from kfkit.deploy.diagnosis import REVISION_API
from kfkit.deploy.inference_service import build_inference_service, build_serving_runtime, checkov_annotations
from kfkit.errors import ConfigError, DeployError, RegistryError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig
    from kfkit.registry import ModelVersion, Registry

__all__ = [
    "FIELD_MANAGER",
    "ISVC_API",
    "RUNTIME_API",
    "REVISION_API",
    "Cluster",
    "Deployment",
    "lineage_of",
    "build_objects",
    "with_scan_notes",
    "wait_ready",
    "deploy_version",
]

FIELD_MANAGER = kube.MANAGER
"""Server-side apply field manager of everything kfkit applies."""
ISVC_API = ("serving.kserve.io", "v1beta1", "inferenceservices")
RUNTIME_API = ("serving.kserve.io", "v1alpha1", "servingruntimes")
_APIS = {"InferenceService": ISVC_API, "ServingRuntime": RUNTIME_API}


class Cluster:
    """The API calls deploy and rollout make (apply, get, list pods, read a log), over the kubernetes client."""

    def __init__(self, client: Any = None) -> None:
        """Use ``client`` (a kubernetes ApiClient); None: :func:`api_client`."""
        self.client = (
            client
            if client is not None
            else kube.api_client(purpose="deploy to", otherwise="preview with `kfkit deploy --dry-run`")
        )

    def _call(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None, body: Any = None,
              content_type: str | None = None, response_type: str = "object") -> Any:  # fmt: skip
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            return self.client.call_api(
                path, method, query_params=query or [], header_params=headers, body=body,
                response_type=response_type, auth_settings=["BearerToken"], _return_http_data_only=True,
            )  # fmt: skip
        except ApiException:
            raise
        except HTTPError as e:
            raise DeployError(f"could not reach the Kubernetes API ({method} {path}): {e}") from e

    @staticmethod
    def path(api: tuple[str, str, str], namespace: str, name: str | None = None) -> str:
        """The REST path of a namespaced custom object (or of its collection)."""
        group, version, plural = api
        base = f"/apis/{group}/{version}/namespaces/{namespace}/{plural}"
        return f"{base}/{name}" if name else base

    def apply(self, obj: dict[str, Any], *, force: bool = True) -> dict[str, Any]:
        """Server-side apply ``obj`` (field manager ``kfkit``, unknown fields refused) and return the live object.

        Raises:
            ConfigError: the object's kind is not one kfkit applies.
            kubernetes.client.exceptions.ApiException: the API server refused it (callers word the message).
        """
        if obj.get("kind") not in _APIS:
            raise ConfigError(f"cannot apply kind {obj.get('kind')!r}: kfkit applies {', '.join(_APIS)}")
        meta = obj["metadata"]
        query = [("fieldManager", FIELD_MANAGER), ("fieldValidation", "Strict")]
        if force:
            query.append(("force", "true"))  # kfkit owns these fields: take them back from a `kubectl edit`
        return self._call("PATCH", self.path(_APIS[obj["kind"]], meta["namespace"], meta["name"]), query=query,
                          body=obj, content_type="application/apply-patch+yaml")  # fmt: skip

    def get(self, api: tuple[str, str, str], namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self._call("GET", self.path(api, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods matching a label selector."""
        found = self._call("GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)])
        return list((found or {}).get("items") or [])

    def log(self, namespace: str, pod: str, container: str, *, tail: int = 20, previous: bool = False) -> str:
        """The last lines of a container's log (best effort: '' when it cannot be read)."""
        from kubernetes.client.exceptions import ApiException

        query = [("container", container), ("tailLines", tail), ("previous", str(previous).lower())]
        try:
            return str(self._call("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}/log", query=query,
                                  response_type="str") or "")  # fmt: skip
        except (ApiException, DeployError):
            return ""


@dataclass
class Deployment:
    """What a deploy applied and where the endpoint is."""

    name: str
    namespace: str
    version: str
    generation: int
    url: str = ""
    """The external URL (status.url)."""
    address: str = ""
    """The cluster-local URL (status.address.url)."""
    applied: list[dict[str, Any]] = field(default_factory=list)
    """The objects as applied (or, for a dry run, as they would be)."""

    def endpoint(self) -> dict[str, Any]:
        """The endpoint description the pipeline's smoke test reads (``LocalEndpoint``'s keys, no process).

        pid 0 means there is no local process to stop; the host is the cluster-local address, reachable
        from a pipeline pod in the cluster.
        """
        from urllib.parse import urlparse

        parsed = urlparse(self.address or self.url or f"http://{self.name}.{self.namespace}.svc.cluster.local")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        base = f"{parsed.scheme}://{parsed.hostname}:{port}"
        return {
            "model_name": self.name, "pid": 0, "host": parsed.hostname, "http_port": port, "grpc_port": port,
            "log_path": "", "v1_url": f"{base}/v1/models/{self.name}:predict",
            "v2_url": f"{base}/v2/models/{self.name}/infer", "url": self.url, "address": self.address,
            "namespace": self.namespace, "inference_service": self.name, "version": self.version,
            "generation": self.generation,
        }  # fmt: skip


def lineage_of(registry: Registry, version: ModelVersion) -> dict[str, str]:
    """A version's lineage for the InferenceService: name, version, registry, git commit, run, digests."""
    meta = version.metadata or {}
    lineage = meta.get("lineage") or {}
    code = lineage.get("code") or {}
    try:
        manifest = registry.manifest(version.name, version.version)
        # The manifest's self-digest (what the model server exports in kfkit_model_info, first 16 digits):
        # sha256 of its canonical JSON without the digest, which is what the registry hands back.
        canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode("utf-8")
        digest = hashlib.sha256(canonical).hexdigest()
    except RegistryError:
        digest = ""
    return {
        "model": version.name,
        "version": version.version,
        "registry_uri": registry.uri,
        "model_uri": version.uri,
        "git_commit": str(code.get("git_commit") or ""),
        "pipeline_run_id": str(lineage.get("pipeline_run_id") or meta.get("run_id") or ""),
        "dataset_sha256": str(lineage.get("dataset_sha256") or ""),
        "manifest_sha256": str(digest),
    }


def build_objects(cfg: KfkitConfig, registry: Registry, version: ModelVersion) -> list[dict[str, Any]]:
    """The objects a deploy of ``version`` applies, in order.

    The ServingRuntime (unless a custom container serves), then the InferenceService named after the model.
    """
    isvc = build_inference_service(
        cfg,
        storage_uri=version.uri,
        model_name=version.name,
        model_version=version.version,
        lineage=lineage_of(registry, version),
    )
    return with_scan_notes([isvc] if cfg.deploy.predictor_image else [build_serving_runtime(cfg), isvc])


def with_scan_notes(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects as a deploy applies them.

    No API token in the predictor and transformer pods (neither calls the Kubernetes API), and the checkov
    findings kfkit accepts for their pods written on them, with why.
    """
    for doc in docs:
        for component in ("predictor", "transformer"):
            if doc["kind"] == "InferenceService" and component in doc["spec"]:
                doc["spec"][component].setdefault("automountServiceAccountToken", False)
        checks = ["CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6", "CKV_K8S_40", "CKV_K8S_29"]
        if doc["kind"] == "ServingRuntime":
            checks.append("CKV_K8S_38")
        doc["metadata"].setdefault("annotations", {}).update(checkov_annotations(*checks))
    return docs


def apply_all(cluster: Cluster, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply each object in order; a refusal names the object, the API server's message and a fix.

    Raises:
        DeployError: the API server refused an object.
    """
    from kubernetes.client.exceptions import ApiException

    applied = []
    for doc in docs:
        where = f"{doc['kind']} {doc['metadata']['namespace']}/{doc['metadata']['name']}"
        try:
            applied.append(cluster.apply(doc))
        except ApiException as e:
            hint = {
                404: "is KServe installed (its CRDs), and does the namespace exist?",
                403: f"grant the deploying service account `patch` on {doc['kind'].lower()}s.serving.kserve.io "
                f"in {doc['metadata']['namespace']!r}",
                409: "another field manager owns these fields; kfkit forces its own, so retry",
                422: "the object is invalid for this KServe version (see the message)",
            }.get(e.status, "see the API server's message")
            raise DeployError(f"could not apply {where}: {e.status} {kube.api_message(e)}; {hint}") from e
    return applied


def wait_ready(
    cluster: Cluster,
    namespace: str,
    name: str,
    *,
    generation: int,
    timeout_s: float,
    poll_s: float = 2.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Poll the InferenceService until the applied generation is Ready, and return it.

    A Ready condition counts only once ``status.observedGeneration >= generation`` (the controller has seen the
    spec that was applied), as KServe's own ``wait_isvc_ready(expected_generation=...)`` does.

    Raises:
        DeployError: the generation failed (cause from the status, the Knative revision or the pods: image pull,
            storage initializer, quota, the server exiting, model load), or it was not Ready within
            ``timeout_s`` (with the last status and the pods' state, e.g. readiness).
    """
    from kubernetes.client.exceptions import ApiException

    where = f"InferenceService {namespace}/{name} generation {generation}"
    deadline = time.monotonic() + timeout_s
    last, read_errors, isvc, soft = "", 0, None, None
    while True:
        try:
            isvc = cluster.get(ISVC_API, namespace, name)
            read_errors = 0
        except (ApiException, DeployError) as e:
            read_errors += 1  # an API server restart must not fail the deploy
            if read_errors >= 5:
                raise DeployError(f"lost track of {where}: 5 status reads failed, last: {e}") from e
        if isvc is None and read_errors == 0:
            raise DeployError(f"{where} disappeared while waiting for it (deleted by someone else?)")
        if isvc is not None:
            status = isvc.get("status") or {}
            summary = diagnosis.summary(isvc)
            if summary != last:
                log(f"[deploy] {where}: {summary}")
                last = summary
            # Until the controller has seen this generation, status and pods describe the previous spec.
            if (status.get("observedGeneration") or 0) >= generation:
                ready = diagnosis.condition(status.get("conditions") or [], "Ready")
                if ready and ready.get("status") == "True":
                    return isvc
                cause = diagnosis.cause(cluster, isvc, generation)
                if cause is not None and cause.fatal:
                    raise DeployError(f"{where} failed: {diagnosis.describe(cluster, namespace, cause)}")
                soft = cause or soft
        if time.monotonic() >= deadline:
            status_line = diagnosis.summary(isvc) if isvc else "never read"
            detail = f"; {diagnosis.describe(cluster, namespace, soft)}" if soft else ""
            raise DeployError(
                f"{where} was not Ready within deploy.timeout_s={timeout_s:g}s (last status: {status_line}){detail}; "
                f"inspect it with `kubectl -n {namespace} describe inferenceservice {name}`"
            )
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))


def production_alias(cfg: KfkitConfig) -> str:
    """The alias that names what serves at 100%: registry.promote_to, else production."""
    from kfkit.registry import DEFAULT_ALIAS

    return cfg.registry.promote_to or DEFAULT_ALIAS


def deploy_version(
    cfg: KfkitConfig,
    *,
    name: str | None = None,
    ref: str | int | None = None,
    model_uri: str | None = None,
    dry_run: bool = False,
    cluster: Cluster | None = None,
    registry: Registry | None = None,
    poll_s: float = 2.0,
    log: Callable[[str], None] = print,
) -> Deployment:
    """Deploy a registry version as an InferenceService at 100% of the traffic, and wait until it is Ready.

    Args:
        cfg: The composed config (``deploy`` and ``registry`` groups).
        name: Model name; default ``cfg.model.name``.
        ref: Version number or alias; default the production alias (registry.promote_to).
        model_uri: Instead of name and ref, a version URI (what the pipeline's publish step outputs).
        dry_run: Build the objects only (``Deployment.applied``); touch no cluster and no alias.
        cluster: Where to apply; default the in-cluster or kubeconfig cluster.
        registry: The registry; default the config's (or the one ``model_uri`` lies in).
        poll_s: Seconds between status reads.
        log: Where progress lines go.

    Once Ready, the production alias is moved to the version if it pointed elsewhere (and the canary alias,
    if there is one), so the registry says what serves; the audit log records the move.

    Raises:
        ConfigError: the config cannot make an InferenceService, or no cluster is configured.
        RegistryError: the version does not exist or fails verification.
        DeployError: the cluster refused an object, or the generation failed or timed out (with its cause).
    """
    from kfkit.registry import open_registry, split_version_uri

    if model_uri is not None:
        root, name, ref = split_version_uri(model_uri)
        if registry is None:
            registry = open_registry(root, endpoint=cfg.registry.endpoint, region=cfg.registry.region)
    registry = registry or open_registry(cfg.registry.uri, endpoint=cfg.registry.endpoint, region=cfg.registry.region)
    name = name or cfg.model.name
    version = registry.get(name, ref if ref is not None else production_alias(cfg))
    docs = build_objects(cfg, registry, version)
    namespace = cfg.deploy.namespace
    if dry_run:
        return Deployment(name=name, namespace=namespace, version=version.version, generation=0, applied=docs)
    cluster = cluster or Cluster()
    applied = apply_all(cluster, docs)
    generation = int(applied[-1]["metadata"].get("generation") or 1)
    log(f"[deploy] applied {name} version {version.version} to {namespace} (generation {generation}); waiting up "
        f"to {cfg.deploy.timeout_s:g}s for Ready")  # fmt: skip
    isvc = wait_ready(cluster, namespace, name, generation=generation, timeout_s=cfg.deploy.timeout_s, poll_s=poll_s,
                      log=log)  # fmt: skip
    reason = f"deployed to InferenceService {namespace}/{name} (generation {generation})"
    aliases = registry.aliases(name)
    for alias in (production_alias(cfg), cfg.deploy.canary_alias):
        if aliases.get(alias) != version.version and (alias == production_alias(cfg) or alias in aliases):
            registry.promote(name, version.version, alias=alias, reason=reason, verify=False)
    status = isvc.get("status") or {}
    return Deployment(name=name, namespace=namespace, version=version.version, generation=generation,
                      url=status.get("url", ""), address=(status.get("address") or {}).get("url", ""),
                      applied=applied)  # fmt: skip
