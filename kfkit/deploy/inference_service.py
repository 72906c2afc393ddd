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

Beyond the default (one predictor on the kfkit runtime, Knative autoscaling), the deploy group adds Standard
mode with HPA or KEDA (:mod:`kfkit.deploy.autoscaling`), GPUs, node selectors and tolerations, KServe's
logger (to the drift detector's URL or a Knative Broker), kfkit's Feast transformer, a custom predictor
container, and the registry version's lineage as labels and annotations.

About 480 lines, past the usual 400: one typed builder per object (ServingRuntime, InferenceService with
its predictor, transformer, logger, autoscaling and placement) whose fields must agree with each other
and with the Helm chart and manifests/ (the tests compare them); kept as one page of the object's shape.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kfkit import __version__
from kfkit import k8s as kube
from kfkit.deploy.autoscaling import AUTOSCALING_METRICS
from kfkit.deploy.autoscaling import plan as plan_autoscaling
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
    "LINEAGE_LABELS",
    "LINEAGE_ANNOTATIONS",
    "LOGGER_MODES",
    "GPU_RESOURCE",
    "ACCEPTED_FINDINGS",
    "checkov_annotations",
    "broker_url",
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
LOGGER_MODES = ("all", "request", "response")
GPU_RESOURCE = "nvidia.com/gpu"
LINEAGE_LABELS = {"model": "kfkit.io/model", "version": "kfkit.io/model-version"}
"""Lineage fact -> label (selectable: ``kubectl get isvc -l kfkit.io/model-version=3``)."""
LINEAGE_ANNOTATIONS = {
    "registry_uri": "kfkit.io/registry-uri",
    "model_uri": "kfkit.io/model-uri",
    "git_commit": "kfkit.io/git-commit",
    "pipeline_run_id": "kfkit.io/pipeline-run-id",
    "dataset_sha256": "kfkit.io/dataset-sha256",
    "manifest_sha256": "kfkit.io/manifest-sha256",
}
"""Lineage fact -> annotation (values too long or free-form for a label)."""
_BROKER_INGRESS = "http://broker-ingress.knative-eventing.svc.cluster.local"  # Knative's multi-tenant broker
ACCEPTED_FINDINGS = {
    "CKV_K8S_43": "image by tag: the digest of the user's build is not known in advance; pin deploy.image to a "
    "digest (image@sha256:...) in production",
    "CKV_K8S_15": "imagePullPolicy left to the default: Always would re-pull on every pod start and stall scaling "
    "from zero when the registry is down; a digest-pinned image is immutable anyway",
    "CKV2_K8S_6": "NetworkPolicy: the predictors are reached through the cluster's ingress or Knative activator and "
    "reach its object store; those peers are per cluster, so the namespace policy is the platform team's",
    "CKV_K8S_40": "UID 1000 is the image's USER (Dockerfile); no privilege escalation, no capabilities and "
    "RuntimeDefault seccomp already guard a container escape",
    "CKV_K8S_29": "pod-level securityContext: a ServingRuntime has no such field and Knative drops it unless its "
    "podspec-securitycontext flag is on; the same settings are on the container",
    "CKV_K8S_38": "service account token: a ServingRuntime cannot say; the InferenceService's ServiceAccount kfkit "
    "sets automountServiceAccountToken: false",
    "CKV_K8S_35": "secrets as environment variables: the MinIO SDK and KServe's storage initializer read the S3 "
    "credentials from AWS_* variables only",
}
"""checkov findings kfkit accepts, with the reason; written on the objects as ``checkov.io/skip<n>`` annotations
(:func:`checkov_annotations`), so each skip sits next to the object it is about."""

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

    d = cfg.deploy
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
            containers=[_server_container(cfg, image=d.image, model_name="{{.Name}}", resources=_resources(cfg))],
            volumes=[_tmp_volume()],
        ),
    )
    return _serialize(runtime)


def build_inference_service(
    cfg: KfkitConfig,
    *,
    storage_uri: str,
    model_name: str | None = None,
    model_version: str | None = None,
    lineage: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An ``InferenceService`` that serves one published version with the ``kfkit`` ServingRuntime.

    Args:
        cfg: The composed config; the ``deploy`` group sets namespace, mode, replicas, autoscaling, resources
            and GPUs, placement, protocol, service account, logger, transformer and custom container.
        storage_uri: The published version folder: ``s3://``, ``gs://``, ``pvc://`` or ``https://``.
            KServe's storage initializer downloads it into /mnt/models.
        model_name: InferenceService (and endpoint) name; defaults to ``cfg.model.name``.
        model_version: Value of the ``app.kubernetes.io/version`` label; defaults to the last path
            segment of ``storage_uri`` (registry layout ``<bucket>/<name>/<version>``).
        lineage: Where the version came from (keys of :data:`LINEAGE_LABELS` and :data:`LINEAGE_ANNOTATIONS`:
            model, version, registry_uri, model_uri, git_commit, ...); written as ``kfkit.io/*`` labels and
            annotations. Empty values are left out.

    Returns:
        A JSON-ready dict (camelCase keys), ready for ``kubectl apply``.

    Raises:
        ConfigError: unsupported storage_uri scheme, invalid name or version, or inconsistent
            replica/autoscaling/protocol/logger settings; the message names the value and the fix.
    """
    d = cfg.deploy
    name = model_name if model_name is not None else cfg.model.name
    _check_name(name)
    storage_uri = _check_storage_uri(storage_uri, name)
    version = _version_label(storage_uri, model_version)
    _check_deploy(cfg)
    scaling = plan_autoscaling(d, name=name, namespace=d.namespace)

    from kserve import V1beta1InferenceService, V1beta1InferenceServiceSpec
    from kubernetes import client as k8s

    labels = kube.labels(name=APP_NAME, instance=name, version=version, component="predictor")
    annotations = dict(scaling.annotations)
    for key, value in (lineage or {}).items():
        if key not in LINEAGE_LABELS and key not in LINEAGE_ANNOTATIONS:
            raise ConfigError(f"lineage key {key!r} is not one of {', '.join([*LINEAGE_LABELS, *LINEAGE_ANNOTATIONS])}")
        if value and key in LINEAGE_LABELS:
            labels[LINEAGE_LABELS[key]] = _label_value(key, str(value))
        elif value:
            annotations[LINEAGE_ANNOTATIONS[key]] = str(value)
    isvc = V1beta1InferenceService(
        api_version="serving.kserve.io/v1beta1",
        kind="InferenceService",
        metadata=k8s.V1ObjectMeta(name=name, namespace=d.namespace, labels=labels, annotations=annotations),
        spec=V1beta1InferenceServiceSpec(
            predictor=_predictor(cfg, name=name, storage_uri=storage_uri, auto_scaling=scaling.auto_scaling),
            transformer=_transformer(cfg, name=name, storage_uri=storage_uri) if d.feast_repo else None,
        ),
    )
    return _serialize(isvc)


def checkov_annotations(*checks: str) -> dict[str, str]:
    """``checkov.io/skip<n>: CHECK=reason`` annotations for accepted findings (keys of ACCEPTED_FINDINGS)."""
    return {f"checkov.io/skip{i}": f"{check}={ACCEPTED_FINDINGS[check]}" for i, check in enumerate(checks, 1)}


def broker_url(namespace: str, broker: str) -> str:
    """The ingress URL of a Knative Eventing Broker (the default multi-tenant channel-based broker class)."""
    return f"{_BROKER_INGRESS}/{namespace}/{broker}"


def _predictor(cfg: KfkitConfig, *, name: str, storage_uri: str, auto_scaling: dict[str, Any] | None) -> Any:
    from kserve import V1beta1LoggerSpec, V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec
    from kubernetes import client as k8s

    d = cfg.deploy
    grpc_args = [f"--grpc_port={HTTP_PORT}", f"--http_port={MOVED_HTTP_PORT}"]
    grpc_ports = [k8s.V1ContainerPort(container_port=HTTP_PORT, name="h2c", protocol="TCP")]
    predictor = V1beta1PredictorSpec(
        min_replicas=d.min_replicas,
        max_replicas=d.max_replicas,
        container_concurrency=d.container_concurrency or None,
        service_account_name=d.service_account or None,
        node_selector=dict(d.node_selector) or None,
        tolerations=[dict(t) for t in d.tolerations] or None,
        auto_scaling=auto_scaling,
    )
    if d.predictor_image:
        # A custom container: KServe's storage initializer still fills /mnt/models from STORAGE_URI.
        resources = _resources(cfg, gpus=d.gpus)
        container = _server_container(
            cfg, image=d.predictor_image, model_name=name, resources=resources, storage_uri=storage_uri
        )
        if d.protocol_version == "grpc-v2":
            container.args += grpc_args
            container.ports = grpc_ports
        predictor.containers = [container]
        predictor.volumes = [_tmp_volume()]
    else:
        model = V1beta1ModelSpec(
            name=CONTAINER_NAME,  # the SDK would write name: "" otherwise; KServe defaults it to this
            model_format=V1beta1ModelFormat(name=MODEL_FORMAT, version=MODEL_FORMAT_VERSION),
            runtime=RUNTIME_NAME,
            protocol_version=d.protocol_version,
            storage_uri=storage_uri,
            resources=_resources(cfg, gpus=d.gpus),
        )
        if d.protocol_version == "grpc-v2":
            # KServe appends these args to the runtime's (argparse keeps the last value) and merges the port
            # by number: gRPC moves onto the one port Knative routes, renamed h2c; REST moves aside.
            model.args = grpc_args
            model.ports = grpc_ports
        predictor.model = model
    url = d.logger_url or (broker_url(d.namespace, d.logger_broker) if d.logger_broker else None)
    if url:
        predictor.logger = V1beta1LoggerSpec(mode=d.logger_mode, url=url)
    return predictor


def _transformer(cfg: KfkitConfig, *, name: str, storage_uri: str) -> Any:
    """The Feast transformer (kfkit.serving.transformer): entity ids in, feature rows to the predictor.

    KServe appends --predictor_host (and --model_name) to the container's args itself.
    """
    from kserve import V1beta1TransformerSpec
    from kubernetes import client as k8s

    d = cfg.deploy
    container = k8s.V1Container(
        name=CONTAINER_NAME,
        image=d.transformer_image or d.image,
        command=["python", "-m", "kfkit.serving.transformer"],
        args=[
            f"--feast-repo={d.feast_repo}",
            f"--model-uri={MODEL_DIR}",  # the version's model.json gives the feature order
            f"--model-name={name}",
            "--host=0.0.0.0",
            f"--http_port={HTTP_PORT}",
        ],
        env=[k8s.V1EnvVar(name="STORAGE_URI", value=storage_uri), *_server_env()],
        ports=[k8s.V1ContainerPort(container_port=HTTP_PORT, name="http1", protocol="TCP")],
        resources=kube.resources(
            {"cpu": d.cpu_request, "memory": d.memory_request}, {"cpu": d.cpu_limit, "memory": d.memory_limit}
        ),  # fmt: skip
        security_context=kube.container_security_context(),
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        **_probes(),
    )
    return V1beta1TransformerSpec(
        min_replicas=d.min_replicas,
        max_replicas=d.max_replicas,
        service_account_name=d.service_account or None,
        containers=[container],
        volumes=[_tmp_volume()],
    )


def _server_container(
    cfg: KfkitConfig, *, image: str, model_name: str, resources: dict[str, Any], storage_uri: str | None = None
) -> Any:
    """The kfkit model server's container, as the runtime runs it (and a custom predictor, with STORAGE_URI)."""
    from kubernetes import client as k8s

    from kfkit.config import server_flags

    env = [k8s.V1EnvVar(name="STORAGE_URI", value=storage_uri)] if storage_uri else []
    return k8s.V1Container(
        name=CONTAINER_NAME,
        image=image,
        command=["python", "-m", "kfkit.serving.server"],
        args=[
            f"--model-uri={MODEL_DIR}",
            f"--model_name={model_name}",  # KServe's spelling, as its own runtimes use; kfkit's server takes both
            "--host=0.0.0.0",  # the server binds 127.0.0.1 by default; in a pod the kubelet and Service need more
            f"--http_port={HTTP_PORT}",
            f"--grpc_port={GRPC_PORT}",
            *server_flags(cfg.serving, payload_logging=False),
        ],
        env=env + _server_env(),
        ports=[k8s.V1ContainerPort(container_port=HTTP_PORT, name="http1", protocol="TCP")],
        resources=resources,
        security_context=kube.container_security_context(),
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],
        **_probes(),
    )


def _server_env() -> list[Any]:
    from kubernetes import client as k8s

    return [
        k8s.V1EnvVar(name="HOME", value="/tmp"),  # the root filesystem is read-only
        k8s.V1EnvVar(name="PYTHONDONTWRITEBYTECODE", value="1"),
        # torch sizes its thread pool from the node's cores, not the CPU limit; a batch-1 MLP wants one
        k8s.V1EnvVar(name="OMP_NUM_THREADS", value="1"),
    ]


def _tmp_volume() -> Any:
    from kubernetes import client as k8s

    return k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource())


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


def _resources(cfg: KfkitConfig, *, gpus: int = 0) -> dict[str, dict[str, Any]]:
    d = cfg.deploy
    gpu = {GPU_RESOURCE: gpus} if gpus else {}  # an extended resource: request = limit, an integer
    return kube.resources(
        {"cpu": d.cpu_request, "memory": d.memory_request, **gpu},
        {"cpu": d.cpu_limit, "memory": d.memory_limit, **gpu},
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


def _label_value(key: str, value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
        raise ConfigError(
            f"lineage {key}={value!r} is not a valid label value (at most 63 letters, digits, '-', '_' or '.')"
        )
    return value


def _check_deploy(cfg: KfkitConfig) -> None:
    """Check the deploy group's serving settings that are not about scaling (see kfkit.deploy.autoscaling)."""
    d = cfg.deploy
    if d.protocol_version not in PROTOCOL_VERSIONS:
        raise ConfigError(
            f"deploy.protocol_version={d.protocol_version!r} is not one of {', '.join(PROTOCOL_VERSIONS)}"
        )
    if d.container_concurrency < 0:
        raise ConfigError(f"deploy.container_concurrency={d.container_concurrency} must be 0 (no limit) or more")
    if d.gpus < 0:
        raise ConfigError(f"deploy.gpus={d.gpus} must be 0 (CPU only) or more")
    if d.logger_url and d.logger_broker:
        raise ConfigError(
            f"deploy.logger_url={d.logger_url!r} and deploy.logger_broker={d.logger_broker!r}: the logger posts to "
            "one place; set one of them (the Broker's Trigger then routes to the drift detector)"
        )
    if d.logger_url and not d.logger_url.startswith(("http://", "https://")):
        raise ConfigError(f"deploy.logger_url={d.logger_url!r} must be an http:// or https:// URL")
    if d.logger_broker and not _NAME.fullmatch(d.logger_broker):
        raise ConfigError(f"deploy.logger_broker={d.logger_broker!r} is not a Broker name (lower-case DNS label)")
    if d.logger_mode not in LOGGER_MODES:
        raise ConfigError(f"deploy.logger_mode={d.logger_mode!r} is not one of {', '.join(LOGGER_MODES)}")
    for i, toleration in enumerate(d.tolerations):
        unknown = set(toleration) - {"key", "operator", "value", "effect", "tolerationSeconds"}
        if unknown:
            raise ConfigError(f"deploy.tolerations[{i}] has unknown keys {sorted(unknown)}: use key, operator, "
                              "value, effect")  # fmt: skip
