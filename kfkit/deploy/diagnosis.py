"""Why an InferenceService generation is not Ready: read from its status, its Knative revision and its pods.

The cause is named the way a person would look for it (image pull, storage initializer, quota, the model
server exiting, model load, readiness, scheduling), with what to check next; a fatal cause fails the deploy
at once, a soft one (readiness, scheduling) only when the wait times out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["REVISION_API", "Cause", "cause", "condition", "describe", "summary"]

REVISION_API = ("serving.knative.dev", "v1", "revisions")


class Cluster(Protocol):
    """What the diagnosis reads of a cluster (:class:`kfkit.deploy.kserve.Cluster` is one)."""

    def get(self, api: tuple[str, str, str], namespace: str, name: str) -> dict[str, Any] | None: ...

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]: ...

    def log(self, namespace: str, pod: str, container: str, *, tail: int = 20, previous: bool = False) -> str: ...


"""(group, version, plural) of Knative revisions, where a failing predictor revision says why."""

_IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
_CRASH = ("CrashLoopBackOff", "Error", "OOMKilled", "RunContainerError", "CreateContainerError")
_STORAGE_INITIALIZER = "storage-initializer"
_FATAL_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
_HINTS = {
    "image pull": "check deploy.image (or deploy.predictor_image) and the image pull secret of the service account",
    "storage initializer": "check that the storage URI exists and that the S3 secret of deploy.service_account "
    "can read it (serving.kserve.io/s3-endpoint annotation, credentials)",
    "quota": "the namespace's ResourceQuota is used up: lower deploy.cpu_request/memory_request/gpus or "
    "deploy.max_replicas, or raise the quota",
    "model server exited": "see the container's log: `kubectl -n {ns} logs {pod} -c kserve-container --previous`",
    "readiness": "the server runs but never passed its readiness probe: see `kubectl -n {ns} logs {pod} -c "
    "kserve-container` (a slow model load needs a longer deploy.timeout_s)",
    "model load": "the runtime could not load the version: see the predictor's log",
    "scheduling": "no node fits the pod: check deploy.gpus, deploy.node_selector and deploy.tolerations",
    "revision failed": "see `kubectl -n {ns} describe revision {revision}`",
}


def condition(conditions: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind`` (Ready, PredictorReady ...), or None."""
    return next((c for c in conditions if c.get("type") == kind), None)


@dataclass
class Cause:
    """Why a generation is not Ready: the named cause, its detail, and where it was seen."""

    cause: str
    detail: str
    where: str = ""
    pod: str = ""
    revision: str = ""
    fatal: bool = True


def _classify(reason: str, message: str, container: str = "") -> str | None:
    text = f"{reason} {message}".lower()
    if "exceeded quota" in text or reason == "ExceededQuota":
        return "quota"
    if reason in _IMAGE_PULL or "pulling image" in text or "pull image" in text:
        return "image pull"
    if container == _STORAGE_INITIALIZER:
        return "storage initializer"
    if reason in ("ModelLoadFailed", "RuntimeUnhealthy") or "failedtoload" in text:
        return "model load"
    if reason == "Unschedulable" or "insufficient" in text:
        return "scheduling"
    if reason in _CRASH or reason.startswith("ExitCode"):
        return "model server exited"
    if "readiness probe" in text:
        return "readiness"
    return None


def _status_cause(isvc: dict[str, Any], generation: int) -> Cause | None:
    """A failure the InferenceService's own status reports for this generation (conditions, model status)."""
    status = isvc.get("status") or {}
    if (status.get("observedGeneration") or 0) < generation:
        return None
    model = status.get("modelStatus") or {}
    failure = model.get("lastFailureInfo") or {}
    if model.get("transitionStatus") in _FATAL_TRANSITIONS or failure:
        reason = failure.get("reason") or model.get("transitionStatus", "")
        message = failure.get("message", "")
        cause = _classify(reason, message, failure.get("location", "")) or "model load"
        return Cause(cause, f"{reason}: {message}".strip(": "), revision=failure.get("modelRevisionName", ""))
    for condition in status.get("conditions") or []:
        reason, message = condition.get("reason", ""), condition.get("message", "")
        if condition.get("status") == "False" and any(w in reason for w in ("Failed", "Deadline", "Invalid", "Quota")):
            cause = _classify(reason, message) or "revision failed"
            return Cause(cause, f"{condition.get('type')}={condition.get('status')} ({reason}): {message}")
    return None


def _revision_cause(cluster: Cluster, namespace: str, revision: str) -> Cause | None:
    """A Knative revision's failed condition (image pull, quota, exit code ...)."""
    from kubernetes.client.exceptions import ApiException

    try:
        found = cluster.get(REVISION_API, namespace, revision)
    except ApiException:
        return None  # Standard mode, or no read access to revisions: the pods tell the rest
    for condition in (found or {}).get("status", {}).get("conditions") or []:
        if condition.get("status") == "False" and condition.get("type") != "Ready":
            reason, message = condition.get("reason", ""), condition.get("message", "")
            cause = _classify(reason, message) or "revision failed"
            return Cause(cause, f"{condition['type']}=False ({reason}): {message}", revision=revision)
    return None


def _pod_cause(cluster: Cluster, namespace: str, name: str, revision: str) -> Cause | None:
    """The worst state among the predictor's pods (those of ``revision`` when Knative labels them)."""
    from kubernetes.client.exceptions import ApiException

    selector = f"serving.kserve.io/inferenceservice={name}"
    try:
        pods = cluster.pods(namespace, selector)
    except ApiException:
        return None
    if revision:
        of_revision = [
            p for p in pods if p["metadata"].get("labels", {}).get("serving.knative.dev/revision") == revision
        ]
        pods = of_revision or pods
    found: list[Cause] = []
    for pod in pods:
        pod_name, status = pod["metadata"]["name"], pod.get("status") or {}
        containers = [(s, True) for s in status.get("initContainerStatuses") or []]
        containers += [(s, False) for s in status.get("containerStatuses") or []]
        for state, init in containers:
            container = state.get("name", "")
            waiting = (state.get("state") or {}).get("waiting") or {}
            terminated = (state.get("state") or {}).get("terminated") or (state.get("lastState") or {}).get(
                "terminated"
            )
            reason, message = waiting.get("reason", ""), waiting.get("message", "")
            if reason in ("PodInitializing", "ContainerCreating"):
                continue  # on its way, or waiting for an init container that has its own state
            if terminated and terminated.get("exitCode", 0) != 0:
                said = terminated.get("message") or terminated.get("reason", "")
                message = f"{message} exit code {terminated.get('exitCode')}: {said}".strip()
                reason = reason or terminated.get("reason", "Error")
            if not reason:
                if not init and state.get("ready") is False and (state.get("state") or {}).get("running"):
                    where = f"pod {pod_name}, container {container}"
                    found.append(Cause("readiness", "running but not ready", where, pod_name, revision, False))
                continue
            cause = _classify(reason, message, container if init else "") or "model server exited"
            fatal = cause != "readiness"
            found.append(Cause(cause, f"{reason}: {message}".strip(": "), f"pod {pod_name}, container {container}",
                                pod_name, revision, fatal))  # fmt: skip
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                detail = f"{condition.get('reason', '')}: {condition.get('message', '')}".strip(": ")
                found.append(Cause("scheduling", detail, f"pod {pod_name}", pod_name, revision, False))
    found.sort(key=lambda c: not c.fatal)
    return found[0] if found else None


def describe(cluster: Cluster, namespace: str, cause: Cause) -> str:
    """The cause for a person: what failed, where, the container's last log lines, and what to check."""
    where = ", ".join(x for x in (f"revision {cause.revision}" if cause.revision else "", cause.where) if x)
    hint = _HINTS.get(cause.cause, "").format(ns=namespace, pod=cause.pod or "POD", revision=cause.revision or "REV")
    text = f"{cause.cause}: {cause.detail}" + (f" ({where})" if where else "")
    if cause.pod and cause.cause in ("model server exited", "readiness"):
        log = cluster.log(namespace, cause.pod, "kserve-container", previous=cause.cause == "model server exited")
        if log.strip():
            text += "\n--- last log lines ---\n" + log.rstrip()
    return f"{text}\n{hint}" if hint else text


def summary(isvc: dict[str, Any]) -> str:
    """One line of an InferenceService's status: observedGeneration and each condition with its reason."""
    status = isvc.get("status") or {}
    conditions = status.get("conditions") or []
    parts = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "") for c in conditions
    ]
    return f"observedGeneration {status.get('observedGeneration', 'none')}; " + (", ".join(parts) or "no conditions")


def cause(cluster: Cluster, isvc: dict[str, Any], generation: int) -> Cause | None:
    """Why the current generation is not Ready, or None.

    Most specific first: a fatal cause from the status, the Knative revision or the pods (a named cause beats a
    generic "revision failed"), else a soft one (readiness, scheduling) that only a timeout reports.
    """
    meta, status = isvc["metadata"], isvc.get("status") or {}
    revision = ((status.get("components") or {}).get("predictor") or {}).get("latestCreatedRevision", "")
    found = [_status_cause(isvc, generation)]
    if revision:
        found.append(_revision_cause(cluster, meta["namespace"], revision))
    found.append(_pod_cause(cluster, meta["namespace"], meta["name"], revision))
    causes = [c for c in found if c is not None]
    for c in causes:
        if not c.revision:
            c.revision = revision
    causes.sort(key=lambda c: (not c.fatal, c.cause == "revision failed"))
    if not causes:
        return None
    primary = causes[0]
    for other in causes[1:]:  # the same cause seen on a pod too: say which pod
        if other.cause == primary.cause and other.pod and not primary.pod:
            primary.where, primary.pod = other.where, other.pod
    return primary
