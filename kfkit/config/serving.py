"""The config groups that serve a model: the server, the drift detector, the retrain trigger, the cluster deploy.

Also the one conversion of serving settings into the model server's flags (:func:`server_flags`) and
the one check of their bounds (:func:`check_serving`), used by every entry point that starts a server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from kfkit.errors import ConfigError

__all__ = [
    "ServingConfig",
    "DriftConfig",
    "RetrainConfig",
    "DeployConfig",
    "SERVER_OPTIONS",
    "check_serving",
    "server_flags",
]


@dataclass
class ServingConfig:
    """The local KServe model server."""

    host: str = "127.0.0.1"
    """Interface the local server binds to."""
    http_port: int = 8080
    """REST port (KServe V1 and Open Inference Protocol V2)."""
    grpc_port: int = 8081
    """Open Inference Protocol V2 gRPC port."""
    startup_timeout_s: float = 120.0
    """How long deploy waits for /v2/health/ready."""
    max_batch_size: int = 256
    """Adaptive batching: most rows one forward pass takes from concurrent requests (1 = no batching).

    Rows, not requests. Handing a pass to the worker thread costs 50-70 µs on one core, more than the
    pass itself for kfkit's MLP (20 µs at 1 row, 44 µs at 256), so a cap well above typical request sizes
    lets multi-row requests share hand-offs too: 64-row requests at concurrency 16 went from 166k to 268k
    rows/s when the cap went from 32 to 256 (batch-1 throughput and latency unchanged)."""
    max_batch_latency_ms: float = 2.0
    """Adaptive batching: longest a request waits for others to join its batch."""
    max_body_bytes: int = 8_388_608
    """Largest request body accepted; bigger ones get 413."""
    payload_log_url: Optional[str] = None
    """Where request/response CloudEvents go (KServe logger format); None = no payload logging."""
    payload_log_queue_size: int = 1000
    """Payload events buffered before new ones are dropped (and counted) rather than slow predictions."""
    grpc_stack: str = "sync"
    """grpcio server under the gRPC fronts (V2, TF Serving): sync (grpcio's thread-pool server; on one core
    it spends about a third of grpc.aio's CPU per call) or aio (grpc.aio on the event loop)."""
    grpc_threads: int = 8
    """sync stack: handler threads per gRPC front, so also the most gRPC calls one forward pass merges
    (calls beyond it wait in grpcio's queue, they are not refused)."""


GRPC_STACKS = ("sync", "aio")
"""``serving.grpc_stack`` choices."""


@dataclass
class DriftConfig:
    """The drift detector built for each version (``python -m kfkit.serving.drift``), and its reference data.

    Published in the version's config.json; the detector (in .venv-drift) reads this section with
    :class:`kfkit.serving.drift.settings.DriftSettings`, which has the same fields and does the checks.
    """

    detector: str = "tabular"
    """Test that decides a window drifted: tabular (alibi-detect TabularDrift: K-S per numeric feature,
    chi-square per categorical one), mmd (MMDDrift, PyTorch backend, on standardised features) or psi
    (population stability index per feature)."""
    p_val: float = 0.05
    """Significance level of the tabular and mmd tests (before the multiple-testing correction)."""
    correction: str = "bonferroni"
    """tabular: how p_val is shared by the per-feature tests, bonferroni or fdr (Benjamini-Hochberg)."""
    reference_rows: int = 1000
    """Training rows sampled as the drift reference (reference.parquet)."""
    window_size: int = 200
    """Rows per test window: a window closes when it holds this many rows (multi-row requests count as rows)."""
    window_seconds: float = 3600.0
    """A window with at least min_window_rows rows also closes this long after it opened (0 = count only)."""
    min_window_rows: int = 20
    """Fewest rows a window closed by window_seconds is tested with; a smaller one stays open."""
    overlap: float = 0.0
    """Share of a closed window's newest rows that start the next one, in [0, 1) (0.5: a test every
    window_size/2 rows, each on window_size rows)."""
    categorical_features: list[str] = field(default_factory=list)
    """Features tested with chi-square instead of K-S (tabular); categories come from the reference."""
    n_permutations: int = 100
    """mmd: permutations of the MMD test (its p-value resolution is 1/n_permutations)."""
    psi_bins: int = 10
    """psi: bins per feature, cut at reference quantiles (fewer when a feature has fewer distinct values)."""
    psi_threshold: float = 0.25
    """psi: PSI at or above which a feature drifted (0.1-0.25 is reported as moderate, 0.25+ as major)."""
    output_drift: bool = True
    """Also test the predicted probability (from logged responses) against the reference predictions."""
    performance_window: int = 500
    """Labelled rows (POST /v1/feedback) the rolling accuracy, precision, recall, ROC-AUC and PR-AUC cover."""
    performance_min_labels: int = 100
    """Labelled rows needed before the rolling metrics are compared with their floors."""
    performance_floors: dict[str, float] = field(default_factory=lambda: {"accuracy": 0.8, "roc_auc": 0.75})
    """Rolling metrics (accuracy, precision, recall, roc_auc, pr_auc) below which an
    org.kfkit.drift.performance event is raised; {} = never."""
    sink: Optional[str] = None
    """URL drift events are POSTed to; None uses $K_SINK (Knative SinkBinding), else no events are sent."""


@dataclass
class RetrainConfig:
    """The retrain trigger: which drift events start a retraining run, and how the run is started.

    A drift test at p=0.05 run hourly on an unchanged stream raises about 1.2 false alarms a day, so one
    drifted window never retrains: drift must be seen in ``min_drifted`` of the last ``window_span``
    windows (hysteresis), one retrain answers a whole burst (deduplication), and no retrain starts within
    ``cooldown_s`` of the last one.
    """

    min_drifted: int = 3
    """Hysteresis K: drifted windows among the last ``window_span`` that start a retrain."""
    window_span: int = 5
    """Hysteresis M: how many of the latest windows (by window index; unreported windows count as no
    drift) are looked at."""
    cooldown_s: float = 21_600.0
    """Seconds after a retrain starts during which no other starts (a burst that outlasts it retrains after)."""
    dedup_capacity: int = 4096
    """(source, id) pairs remembered, so an event Knative delivers again counts once; the oldest go first."""
    dry_run: bool = False
    """Record decisions and reasons only; start no run."""
    port: int = 8091
    """Port of the trigger's CloudEvents endpoint (on serving.host) that ``kfkit run`` starts."""
    detector_port: int = 8090
    """Port of the drift detector (on serving.host) that ``kfkit run`` starts next to the predictor."""
    detector_python: Optional[str] = None
    """Python of the drift environment; None = .venv-drift/bin/python of the kfkit checkout."""
    startup_timeout_s: float = 120.0
    """How long ``kfkit run`` waits for the detector and the trigger to answer ready."""
    synthetic_drift: Optional[float] = 0.5
    """dataset.drift of retrain runs on synthetic_fraud (the shifted distribution: its newest data); None
    keeps the run's."""
    dataset_path: Optional[str] = None
    """dataset.path of retrain runs on csv: where the newest rows are; None re-reads the run's dataset.path."""
    overrides: list[str] = field(default_factory=list)
    """More overrides for retrain runs only, e.g. [training.epochs=20]."""
    timeout_s: float = 7200.0
    """Longest a retrain run may take before it is stopped and recorded as failed."""
    reason: str = ""
    """Why this run was started: the trigger sets it on the KFP runs it starts (the run parameter
    config.retrain.reason); empty for a run a person started."""
    kfp_host: Optional[str] = None
    """Kubeflow Pipelines API (e.g. http://ml-pipeline.kubeflow:8888): retrain runs go there through
    kfp.Client; None runs ``kfkit run --no-serve`` on this machine."""
    kfp_experiment: str = "kfkit-retrain"
    """KFP experiment the retrain runs are filed under."""
    kfp_namespace: Optional[str] = None
    """KFP namespace (multi-user Kubeflow); None uses the client's."""
    kfp_pipeline_id: Optional[str] = None
    """Run this uploaded pipeline (with kfp_version_id) instead of compiling kfkit's pipeline."""
    kfp_version_id: Optional[str] = None
    """Version of kfp_pipeline_id to run."""
    kfp_poll_s: float = 30.0
    """Seconds between reads of a KFP run's state."""


@dataclass
class DeployConfig:
    """Where the deploy step puts the model."""

    target: str = "local"
    """local (a KServe model server process on this machine) or kserve (an InferenceService)."""
    namespace: str = "kfkit"
    """Kubernetes namespace, for target=kserve."""
    min_replicas: int = 1
    """Knative autoscaling lower bound (0 allows scale to zero)."""
    max_replicas: int = 3
    """Knative autoscaling upper bound."""
    image: str = "${images.main}"
    """Container image with kfkit installed, used by the KServe ServingRuntime (and training jobs); defaults to
    images.main, the image the pipeline steps run in."""
    protocol_version: str = "v2"
    """InferenceService protocol: v1 or v2 (both REST on one port), or grpc-v2 (Knative routes gRPC, h2c)."""
    autoscaling_metric: str = "concurrency"
    """Knative scaling metric: concurrency or rps (KPA, allows scale to zero), cpu or memory (HPA)."""
    autoscaling_target: int = 10
    """Per-replica target of autoscaling_metric (in-flight requests, requests/s, or % of the request)."""
    container_concurrency: int = 0
    """Hard limit of in-flight requests per replica; 0 means no limit (Knative's default)."""
    cpu_request: str = "500m"
    """CPU request of the model server container (Kubernetes quantity)."""
    cpu_limit: str = "1"
    """CPU limit of the model server container."""
    memory_request: str = "512Mi"
    """Memory request of the model server container."""
    memory_limit: str = "1Gi"
    """Memory limit of the model server container."""
    service_account: str = "kfkit"
    """ServiceAccount of the predictor pods; KServe reads the S3 credentials secret attached to it."""
    mode: str = "knative"
    """KServe deployment mode: knative (called Serverless before KServe 0.16) or standard (RawDeployment);
    either spelling is accepted."""
    autoscaler: str = "auto"
    """auto, kpa, hpa or keda. auto: Knative mode uses KPA for concurrency/rps and HPA for cpu/memory;
    Standard mode uses HPA for cpu/memory and KEDA (a Prometheus query) for concurrency/rps."""
    scale_down_delay: Optional[str] = None
    """Knative: how long replicas stay after the load drops (e.g. 10m), so GPU models do not thrash on cold
    starts; None keeps Knative's default (0s)."""
    initial_scale: Optional[int] = None
    """Knative: replicas a new revision starts with; None keeps Knative's default (1)."""
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    """Prometheus that scrapes the predictors' /metrics: KEDA's serverAddress, and where rollouts read the
    canary's error rate and p99."""
    keda_query: Optional[str] = None
    """PromQL KEDA scales on instead of the one built from autoscaling_metric; divided by autoscaling_target."""
    gpus: int = 0
    """nvidia.com/gpu per predictor replica (request = limit); 0 = CPU only."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the predictor pods must match, e.g. {nvidia.com/gpu.product: NVIDIA-L4}."""
    tolerations: list[dict[str, str]] = field(default_factory=list)
    """Kubernetes tolerations of the predictor pods (key/operator/value/effect), e.g. for a GPU node pool."""
    predictor_image: Optional[str] = None
    """A custom predictor container instead of the kfkit ServingRuntime; KServe's storage initializer still
    puts the version in /mnt/models. None uses the runtime."""
    feast_repo: Optional[str] = None
    """Feast repository folder inside the transformer image: adds kfkit's Feast transformer (entity ids ->
    feature rows) in front of the predictor. None = no transformer."""
    transformer_image: Optional[str] = None
    """Image of the Feast transformer; None uses image."""
    logger_url: Optional[str] = None
    """Where KServe's logger sends request/response CloudEvents: the drift detector's URL (docs/drift.md),
    e.g. http://kfkit-drift.kfkit.svc.cluster.local. None = no logger (unless logger_broker)."""
    logger_broker: Optional[str] = None
    """Instead of logger_url: the Knative Eventing Broker (in deploy.namespace) the logger posts to; a Trigger
    routes the events on to the detector (manifests/eventing)."""
    logger_mode: str = "all"
    """What the logger sends: all, request or response."""
    timeout_s: float = 600.0
    """How long deploy (and each rollout move) waits for Ready of the generation it applied."""
    canary_steps: list[int] = field(default_factory=lambda: [10, 50, 100])
    """Traffic percentages `kfkit rollout auto` steps through; increasing, the last one 100."""
    canary_step_s: float = 300.0
    """How long `kfkit rollout auto` watches the canary at each step before the next."""
    max_error_rate: float = 0.01
    """Share of the canary's requests answered with a server error above which a rollout rolls back."""
    slo_p99_ms: float = 100.0
    """p99 latency bound of the canary (ms) in rollouts; also the SLO `kfkit bench serve` sizes capacity at."""
    canary_replicas: int = 1
    """Standard mode: replicas of the canary's Deployment (KServe 0.20's spec.canary[] has fixed replicas)."""
    canary_alias: str = "canary"
    """Registry alias of the version in canary; the production alias is registry.promote_to."""
    tag_routing: bool = True
    """Knative canaries: tag the revisions so latest-<name> and prev-<name> URLs reach each one for checks."""


SERVER_OPTIONS = (
    "max_batch_size",
    "max_batch_latency_ms",
    "max_body_bytes",
    "payload_log_url",
    "payload_log_queue_size",
    "grpc_stack",
    "grpc_threads",
)
"""``serving.*`` fields the model server takes as flags (``--max-batch-size`` ...); see :func:`server_flags`."""


_SERVING_DEFAULTS = ServingConfig()


def check_serving(serving: ServingConfig, *, key: Any = "serving.{}".format) -> None:
    """The bounds of the serving options: the one check for the config and the server's own flags.

    Args:
        serving: The options to check.
        key: Turns a field name into the name the user wrote, for the message (``serving.max_batch_size``
            from a config, ``--max-batch-size`` from the server's command line).

    Raises:
        ConfigError: naming the key, the value and the bound.
    """
    for name in ("max_batch_size", "max_body_bytes", "payload_log_queue_size", "grpc_threads"):
        if getattr(serving, name) < 1:
            raise ConfigError(f"{key(name)}={getattr(serving, name)} must be at least 1")
    if serving.max_batch_latency_ms < 0:
        raise ConfigError(f"{key('max_batch_latency_ms')}={serving.max_batch_latency_ms} must not be negative")
    if serving.grpc_stack not in GRPC_STACKS:
        raise ConfigError(f"{key('grpc_stack')}={serving.grpc_stack!r} must be one of {', '.join(GRPC_STACKS)}")
    url = serving.payload_log_url
    if url and not url.startswith(("http://", "https://")):
        raise ConfigError(f"{key('payload_log_url')}={url!r} must be an http:// or https:// URL")
    for name in ("http_port", "grpc_port"):
        if not 0 < getattr(serving, name) < 65536:
            raise ConfigError(f"{key(name)}={getattr(serving, name)} is not a TCP port (1-65535)")


def server_flags(serving: ServingConfig, *, payload_logging: bool = True) -> list[str]:
    """The model server's flags for ``serving``: the one place a ServingConfig becomes a command line.

    The local deploy, ``kfkit serve``, the ServingRuntime and the benchmark all start the server with
    these. Numbers are written as Helm prints them (``2`` not ``2.0``), so the chart renders the same args.

    Args:
        serving: Batching, body limit and payload logging options (checked with :func:`check_serving`).
        payload_logging: Include the payload-logging flags; a ServingRuntime leaves them out, since on a
            cluster KServe's own logger sends the payloads.

    Raises:
        ConfigError: an option is out of bounds.
    """
    check_serving(serving)
    latency = float(serving.max_batch_latency_ms)
    flags = [
        f"--max-batch-size={serving.max_batch_size}",
        f"--max-batch-latency-ms={int(latency) if latency.is_integer() else latency!r}",
        f"--max-body-bytes={serving.max_body_bytes}",
    ]
    # Only when set: the rendered ServingRuntime args (and Helm's) stay as they were for the defaults.
    if serving.grpc_stack != _SERVING_DEFAULTS.grpc_stack:
        flags.append(f"--grpc-stack={serving.grpc_stack}")
    if serving.grpc_threads != _SERVING_DEFAULTS.grpc_threads:
        flags.append(f"--grpc-threads={serving.grpc_threads}")
    if payload_logging:
        flags.append(f"--payload-log-queue-size={serving.payload_log_queue_size}")
        if serving.payload_log_url:  # None: no payload logging
            flags.append(f"--payload-log-url={serving.payload_log_url}")
    return flags
