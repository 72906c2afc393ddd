"""What every Kubernetes object kfkit writes shares: app.kubernetes.io labels, restricted security, resources.

The InferenceService and ServingRuntime builders (kfkit.deploy.inference_service) and the training-job
builders (kfkit.training.cluster) take these from here, so a pod kfkit creates is labelled and locked down
the same way wherever it comes from. Plain camelCase dicts, as ``kubectl apply`` takes them; the kubernetes
client's typed models accept them as field values and serialise them unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any

from kfkit import __version__

__all__ = ["PART_OF", "MANAGER", "RUN_AS_USER", "labels", "container_security_context", "pod_security_context",
           "resources", "api_client", "api_message", "create_custom_object"]  # fmt: skip

PART_OF = "kfkit"
"""app.kubernetes.io/part-of of everything kfkit creates."""
MANAGER = "kfkit"
"""app.kubernetes.io/managed-by, and the server-side-apply field manager."""
RUN_AS_USER = 1000
"""The image's USER (Dockerfile), which also owns what the train step stages on the shared claim."""


def labels(*, name: str, instance: str, component: str, version: str | None = __version__) -> dict[str, str]:
    """The recommended ``app.kubernetes.io`` labels; an empty value (e.g. no version) is left out.

    Args:
        name: ``app.kubernetes.io/name`` (what the application is: ``kfkit``).
        instance: ``app.kubernetes.io/instance`` (which one: the model or runtime name).
        component: ``app.kubernetes.io/component`` (predictor, serving-runtime, training ...).
        version: ``app.kubernetes.io/version``; kfkit's own version unless a model version is given.
    """
    found = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": instance,
        "app.kubernetes.io/version": version,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": MANAGER,
    }
    return {key: value for key, value in found.items() if value}


def container_security_context() -> dict[str, Any]:
    """Pod Security Standards "restricted", plus a read-only root filesystem (mount an emptyDir at /tmp)."""
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security_context() -> dict[str, Any]:
    """The pod-level half of "restricted" (Knative refuses pod-level contexts: serving sets the container's)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(requests: dict[str, Any], limits: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """A container's ``resources``; limits default to the requests (Guaranteed QoS).

    Quantities are passed as strings, except extended resources such as ``nvidia.com/gpu``, whose request
    and limit Kubernetes requires to be equal integers.
    """

    def quantity(value: Any) -> Any:
        return value if isinstance(value, int) and not isinstance(value, bool) else str(value)

    requests = {key: quantity(value) for key, value in requests.items()}
    limits = dict(requests) if limits is None else {key: quantity(value) for key, value in limits.items()}
    return {"requests": requests, "limits": limits}


def api_client(*, purpose: str, otherwise: str) -> Any:
    """A kubernetes ApiClient for the cluster this runs in (service account), else the kubeconfig's context.

    Args:
        purpose: What the cluster is needed for, for the message ("deploy to").
        otherwise: What the user can do without a cluster, for the message.

    Raises:
        ConfigError: neither is available; the message names both problems.
    """
    from kubernetes import client, config

    from kfkit.errors import ConfigError

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException as e:
        in_cluster = str(e)
    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)
    try:
        # Named explicitly: the client reads $KUBECONFIG once, when it is first imported.
        return config.new_client_from_config(config_file=kubeconfig)
    except (config.ConfigException, OSError, TypeError, ValueError) as e:
        raise ConfigError(
            f"no Kubernetes cluster to {purpose}: not in a pod ({in_cluster}) and kubeconfig {kubeconfig} is "
            f"unusable ({e}); point KUBECONFIG at a valid config, or {otherwise}"
        ) from e


def api_message(error: Any) -> str:
    """The API server's own message in an ApiException (its JSON body's ``message``), else its reason."""
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError, AttributeError):
        return str(getattr(error, "reason", error))


def create_custom_object(
    api: Any, body: dict[str, Any], *, group: str, version: str, plural: str, error: type[Exception], what: str
) -> None:
    """Create a namespaced custom object (a job kfkit submits); a refusal is ``error`` saying what to do.

    Args:
        api: A kubernetes ``CustomObjectsApi``.
        body: The object; its metadata names the namespace.
        group: API group, e.g. ``kubeflow.org``.
        version: API version, e.g. ``v1``.
        plural: Resource plural, e.g. ``pytorchjobs``.
        error: The KfkitError subclass to raise (TrainingError, PipelineError ...).
        what: What the object is, for the 404 and 409 hints ("the PyTorchJob CRD", "the Spark Operator").

    Raises:
        error: the API refused it (404: CRD or namespace missing; 403: RBAC; 409: the name exists) or is
            unreachable.
    """
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    namespace = body["metadata"]["namespace"]
    where = f"{body['kind']} {namespace}/{body['metadata']['name']}"
    try:
        api.create_namespaced_custom_object(group, version, namespace, plural, body)
    except ApiException as e:
        hint = {
            404: f"is {what} ({plural}.{group}) installed, and does namespace {namespace!r} exist?",
            403: f"grant the step's service account `create` on {plural}.{group} in {namespace!r}",
            409: "an object of that name exists already; delete it or let the step pick a new name",
        }.get(e.status, "see the API server's message")
        raise error(f"could not create {where}: {e.status} {api_message(e)}; {hint}") from e
    except HTTPError as e:
        raise error(f"could not reach the Kubernetes API to create {where}: {e}") from e
