"""Build the KServe ServingRuntime and InferenceService manifests that serve a published kfkit model version.

The objects are constructed through the kserve SDK's typed models (and the kubernetes client's), so a
misspelt field fails in Python, then serialised to the plain dicts ``kubectl apply`` takes.
``manifests/base`` and ``helm/kfkit`` hold the same ServingRuntime; tests keep the three in step.

Two cluster facts shape the output:

* Knative Serving (KServe's serverless mode) routes exactly one container port per revision, and KServe
  merges the InferenceService's ports into the runtime's by ``containerPort``. So the runtime declares the
  REST port only (V1 and V2 REST share it), and ``protocol_version=grpc-v2`` swaps the server's ports so
  that gRPC (h2c) listens on that one routed port.
* Knative rejects pod-level ``securityContext`` unless the ``kubernetes.podspec-securitycontext`` feature
  flag is on, although the InferenceService CRD accepts it. The restricted settings therefore live on the
  container, where both allow them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kfkit import __version__
from kfkit import k8s as kube
from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = [
    "RUNTIME_NAME",
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "STORAGE_SCHEMES",
    "PROTOCOL_VERSIONS",
    "AUTOSCALING_METRICS",
    "build_serving_runtime",
    "build_inference_service",
    "to_yaml",
]

APP_NAME = "kfkit"  # app.kubernetes.io/name and part-of
RUNTIME_NAME = "kfkit"
MODEL_FORMAT = "kfkit"
MODEL_FORMAT_VERSION = "1"
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "https://")
PROTOCOL_VERSIONS = ("v1", "v2", "grpc-v2")
KPA = "kpa.autoscaling.knative.dev"
HPA = "hpa.autoscaling.knative.dev"
AUTOSCALING_METRICS = {"concurrency": KPA, "rps": KPA, "cpu": HPA, "memory": HPA}
"""Knative metric -> the autoscaler class that implements it (KPA scales to zero, HPA does not)."""

CONTAINER_NAME = "kserve-container"  # the container KServe merges the predictor's model spec into
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the storageUri contents
HTTP_PORT = 8080
GRPC_PORT = 8081
MOVED_HTTP_PORT = 8082  # REST port in grpc-v2 mode, when gRPC takes the routed port

_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_MAX_NAME = 47  # Knative appends "-predictor" and then "-00001" to it, and a revision name is a DNS label
_VERSION = re.compile(r"[1-9][0-9]{0,17}")  # a registry version number (kfkit.registry)
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def build_serving_runtime(cfg: KfkitConfig) -> dict[str, Any]:
    """The namespaced ``ServingRuntime`` named ``kfkit`` that runs kfkit's KServe model server.

    It claims model format ``kfkit`` version 1 (``autoSelect``), speaks protocols v1, v2 and grpc-v2, and
    runs ``python -m kfkit.serving.server --model-uri=/mnt/models --model_name={{.Name}}``; KServe fills in
    ``{{.Name}}`` with the InferenceService's name.

    Args:
        cfg: The composed config; ``deploy.image``, ``deploy.namespace``, the resource fields and the server's
            batching and body limit (``serving.max_batch_size``, ``max_batch_latency_ms``, ``max_body_bytes``)
            are used.

    Returns:
        A JSON-ready dict (camelCase keys), ready for ``kubectl apply``.
    """
    from kserve import V1alpha1ServingRuntime, V1alpha1ServingRuntimeSpec, V1alpha1SupportedModelFormat
    from kubernetes import client as k8s

    from kfkit.config import server_flags

    d = cfg.deploy
    container = k8s.V1Container(
        name=CONTAINER_NAME,
        image=d.image,
        command=["python", "-m", "kfkit.serving.server"],
        args=[
            f"--model-uri={MODEL_DIR}",
            "--model_name={{.Name}}",  # KServe's spelling, as its own runtimes use; kfkit's server takes both
            "--host=0.0.0.0",  # the server binds 127.0.0.1 by default; in a pod the kubelet and Service need more
            f"--http_port={HTTP_PORT}",
            f"--grpc_port={GRPC_PORT}",
            *server_flags(cfg.serving, payload_logging=False),
        ],
        env=[
            k8s.V1EnvVar(name="HOME", value="/tmp"),  # the root filesystem is read-only
            k8s.V1EnvVar(name="PYTHONDONTWRITEBYTECODE", value="1"),
            # torch sizes its thread pool from the node's cores, not the CPU limit; a batch-1 MLP wants one
            k8s.V1EnvVar(name="OMP_NUM_THREADS", value="1"),
        ],
        ports=[k8s.V1ContainerPort(container_port=HTTP_PORT, name="http1", protocol="TCP")],
        resources=_resources(cfg),
        security_context=kube.container_security_context(),
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        **_probes(),
    )
    runtime = V1alpha1ServingRuntime(
        api_version="serving.kserve.io/v1alpha1",
        kind="ServingRuntime",
        metadata=k8s.V1ObjectMeta(
            name=RUNTIME_NAME,
            namespace=d.namespace,
            labels=kube.labels(name=APP_NAME, instance=RUNTIME_NAME, version=__version__, component="serving-runtime"),
        ),
        spec=V1alpha1ServingRuntimeSpec(
            annotations={"prometheus.kserve.io/port": str(HTTP_PORT), "prometheus.kserve.io/path": "/metrics"},
            supported_model_formats=[
                V1alpha1SupportedModelFormat(name=MODEL_FORMAT, version=MODEL_FORMAT_VERSION, auto_select=True)
            ],
            protocol_versions=list(PROTOCOL_VERSIONS),
            containers=[container],
            volumes=[k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())],
        ),
    )
    return _serialize(runtime)


def build_inference_service(
    cfg: KfkitConfig,
    *,
    storage_uri: str,
    model_name: str | None = None,
    model_version: str | None = None,
) -> dict[str, Any]:
    """An ``InferenceService`` that serves one published version with the ``kfkit`` ServingRuntime.

    Args:
        cfg: The composed config; the ``deploy`` group sets namespace, replicas, autoscaling, resources,
            protocol and service account.
        storage_uri: The published version folder: ``s3://``, ``gs://``, ``pvc://`` or ``https://``.
            KServe's storage initializer downloads it into /mnt/models.
        model_name: InferenceService (and endpoint) name; defaults to ``cfg.model.name``.
        model_version: Value of the ``app.kubernetes.io/version`` label; defaults to the last path
            segment of ``storage_uri`` (registry layout ``<bucket>/<name>/<version>``).

    Returns:
        A JSON-ready dict (camelCase keys), ready for ``kubectl apply``.

    Raises:
        ConfigError: unsupported storage_uri scheme, invalid name or version, or inconsistent
            replica/autoscaling/protocol settings; the message names the value and the fix.
    """
    d = cfg.deploy
    name = model_name if model_name is not None else cfg.model.name
    _check_name(name)
    storage_uri = _check_storage_uri(storage_uri, name)
    version = _version_label(storage_uri, model_version)
    metric_class = _check_deploy(cfg)

    from kserve import (
        V1beta1InferenceService,
        V1beta1InferenceServiceSpec,
        V1beta1ModelFormat,
        V1beta1ModelSpec,
        V1beta1PredictorSpec,
    )
    from kubernetes import client as k8s

    model = V1beta1ModelSpec(
        name=CONTAINER_NAME,  # the SDK would write name: "" otherwise; KServe defaults it to this
        model_format=V1beta1ModelFormat(name=MODEL_FORMAT, version=MODEL_FORMAT_VERSION),
        runtime=RUNTIME_NAME,
        protocol_version=d.protocol_version,
        storage_uri=storage_uri,
        resources=_resources(cfg),
    )
    if d.protocol_version == "grpc-v2":
        # KServe appends these args to the runtime's (argparse keeps the last value) and merges the port
        # by number: gRPC moves onto the one port Knative routes, renamed h2c; REST moves aside.
        model.args = [f"--grpc_port={HTTP_PORT}", f"--http_port={MOVED_HTTP_PORT}"]
        model.ports = [k8s.V1ContainerPort(container_port=HTTP_PORT, name="h2c", protocol="TCP")]
    predictor = V1beta1PredictorSpec(
        min_replicas=d.min_replicas,
        max_replicas=d.max_replicas,
        container_concurrency=d.container_concurrency or None,
        service_account_name=d.service_account or None,
        model=model,
    )
    labels = kube.labels(name=APP_NAME, instance=name, version=version, component="predictor")
    isvc = V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=k8s.V1ObjectMeta(
            name=name,
            namespace=d.namespace,
            labels=labels,
            annotations={
                "autoscaling.knative.dev/class": metric_class,
                "autoscaling.knative.dev/metric": d.autoscaling_metric,
                "autoscaling.knative.dev/target": str(d.autoscaling_target),
            },
        ),
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )
    return _serialize(isvc)


def to_yaml(docs: list[dict[str, Any]]) -> str:
    """Render manifests as one multi-document YAML stream (``---`` separated, keys in insertion order).

    Args:
        docs: Manifests such as those from :func:`build_serving_runtime` and :func:`build_inference_service`.

    Returns:
        YAML text ending in a newline, for ``kubectl apply -f -``.
    """
    import yaml

    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, explicit_start=True)


def _serialize(obj: Any) -> dict[str, Any]:
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(obj)


def _resources(cfg: KfkitConfig) -> dict[str, dict[str, str]]:
    d = cfg.deploy
    return kube.resources(
        {"cpu": d.cpu_request, "memory": d.memory_request}, {"cpu": d.cpu_limit, "memory": d.memory_limit}
    )


def _probes() -> dict[str, Any]:
    """TCP readiness and liveness probes on the routed port.

    TCP, because that port speaks REST (v1, v2) or gRPC (grpc-v2) and Knative allows probes on it only;
    the server listens only once the model is loaded. Readiness leaves periodSeconds unset, which makes
    Knative's queue-proxy probe aggressively during a cold start; liveness allows a minute to start.
    """
    from kubernetes import client as k8s

    def tcp() -> Any:
        return k8s.V1TCPSocketAction(port=HTTP_PORT)

    return {
        "readiness_probe": k8s.V1Probe(tcp_socket=tcp()),
        "liveness_probe": k8s.V1Probe(tcp_socket=tcp(), initial_delay_seconds=30, period_seconds=10),
    }


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or len(name) > _MAX_NAME:
        raise ConfigError(
            f"model name {name!r} cannot name an InferenceService: use lower-case letters, digits and '-', "
            f"starting with a letter, at most {_MAX_NAME} characters (e.g. model.name=fraud-mlp)"
        )


def _check_storage_uri(uri: str, name: str) -> str:
    """The storage URI as KServe should get it: a registry version folder, written with its trailing slash.

    KServe's storage initializer lists an object-store URI by prefix, so ``…/1`` would also download
    ``…/10/``: s3://, gs:// and pvc:// URIs must end in ``<name>/<version>`` and are written with the slash.
    """
    scheme_ok = isinstance(uri, str) and uri.startswith(STORAGE_SCHEMES)
    if scheme_ok and uri.split("://", 1)[1].strip("/"):
        if uri.startswith("https://"):  # an archive or a single file: no prefix listing
            return uri
        parts = uri.split("://", 1)[1].rstrip("/").split("/")
        if len(parts) >= 3 and _VERSION.fullmatch(parts[-1]):
            return uri.rstrip("/") + "/"
        raise ConfigError(
            f"storage_uri={uri!r} is not a published version: it must end in <model name>/<version> "
            f"(a positive integer), e.g. s3://kfkit-models/{name}/1/; `kfkit registry list` shows the versions"
        )
    hint = ""
    if isinstance(uri, str) and uri.startswith(("file://", "/", ".")):
        hint = "; a local path is not readable from the cluster: publish the version to an S3 registry first"
    raise ConfigError(
        f"storage_uri={uri!r} is not a location KServe can download from: use "
        f"{', '.join(s + '...' for s in STORAGE_SCHEMES)} pointing at the published version folder "
        f"(e.g. s3://kfkit-models/{name}/1/){hint}"
    )


def _version_label(uri: str, version: str | None) -> str | None:
    if version is not None:
        if len(version) > 63 or not _LABEL_VALUE.fullmatch(version):
            raise ConfigError(
                f"model_version={version!r} is not a valid label value: at most 63 letters, digits, "
                "'-', '_' or '.', starting and ending with a letter or digit (e.g. 3 or 2024-06-01.1)"
            )
        return version
    # Derived from the URI: tidy it into a label value rather than fail on an odd folder name.
    last = uri.rstrip("/").rsplit("/", 1)[-1]
    tidy = re.sub(r"[^A-Za-z0-9_.-]", "-", last)[:63].strip("-_.")
    return tidy or None


def _check_deploy(cfg: KfkitConfig) -> str:
    """Check the deploy group's serving settings; return the Knative autoscaler class for its metric."""
    d = cfg.deploy
    if d.protocol_version not in PROTOCOL_VERSIONS:
        raise ConfigError(
            f"deploy.protocol_version={d.protocol_version!r} is not one of {', '.join(PROTOCOL_VERSIONS)}"
        )
    if d.autoscaling_metric not in AUTOSCALING_METRICS:
        raise ConfigError(
            f"deploy.autoscaling_metric={d.autoscaling_metric!r} is not one of {', '.join(AUTOSCALING_METRICS)}"
        )
    metric_class = AUTOSCALING_METRICS[d.autoscaling_metric]
    if d.min_replicas < 0 or d.max_replicas < max(d.min_replicas, 1):
        raise ConfigError(
            f"deploy.min_replicas={d.min_replicas} and deploy.max_replicas={d.max_replicas}: need "
            "0 <= min_replicas <= max_replicas and max_replicas >= 1"
        )
    if d.min_replicas == 0 and metric_class == HPA:
        raise ConfigError(
            f"deploy.min_replicas=0 (scale to zero) needs a KPA metric, but deploy.autoscaling_metric="
            f"{d.autoscaling_metric!r} uses the HPA: set deploy.autoscaling_metric=concurrency (or rps), "
            "or deploy.min_replicas=1"
        )
    if d.autoscaling_target < 1:
        raise ConfigError(f"deploy.autoscaling_target={d.autoscaling_target} must be at least 1")
    if d.container_concurrency < 0:
        raise ConfigError(f"deploy.container_concurrency={d.container_concurrency} must be 0 (no limit) or more")
    return metric_class
