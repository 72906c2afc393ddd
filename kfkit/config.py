"""Typed configuration: the dataclass schemas kfkit owns, and composing them with Hydra.

YAML files under configs/ only select and override; every field, its type and its default live here.
The composed config travels to pipeline components as a plain dict and is re-validated there with
:func:`from_dict`, so a component run on a cluster checks exactly what a local run checks.

About 560 lines, past the usual 400: most of it is one docstring per field, and the whole schema, its
checks and the one conversion of serving settings into server flags (:func:`server_flags`) read best as
one page, as Hydra's structured-config examples keep them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kfkit.errors import ConfigError

__all__ = [
    "DatasetConfig",
    "ModelConfig",
    "TrainingConfig",
    "ClusterTrainingConfig",
    "EvaluationConfig",
    "GateConfig",
    "RegistryConfig",
    "ServingConfig",
    "DriftConfig",
    "DeployConfig",
    "KfkitConfig",
    "CONFIG_DIR",
    "compose",
    "from_dict",
    "to_dict",
    "SERVER_OPTIONS",
    "server_flags",
    "check_serving",
]

# The folder of the kfkit.configs package: configs/ in a checkout, site-packages/kfkit/configs in an image.
CONFIG_DIR = Path(importlib.util.find_spec("kfkit.configs").submodule_search_locations[0])
DATASET_KINDS = ("breast_cancer", "synthetic_fraud", "csv")
FRAMEWORKS = ("pytorch", "tensorflow")
BACKENDS = ("auto", "gloo", "nccl")
DEVICES = ("auto", "cpu", "cuda")
DEPLOY_TARGETS = ("local", "kserve")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
TRAIN_LAUNCHERS = ("local", "in_pod", "pytorchjob", "trainjob")
THRESHOLD_RULES = ("fixed", "max_f1", "recall_at_precision")


@dataclass
class DatasetConfig:
    """Where the rows come from and how they are split."""

    kind: str = MISSING
    """One of breast_cancer, synthetic_fraud, csv."""
    path: Optional[str] = None
    """CSV or Parquet file, for kind=csv."""
    label: str = "label"
    """Binary target column (0/1); the positive class is 1."""
    features: Optional[list[str]] = None
    """Feature columns; None means every numeric column except label, entity and timestamp."""
    entity_column: Optional[str] = None
    """Entity id column (Feast join key), kept out of the features."""
    timestamp_column: Optional[str] = None
    """Event timestamp column (Feast), kept out of the features."""
    model_name: str = MISSING
    """Default name of models trained on this data (DNS-1123: lower case, digits, '-')."""
    n_rows: int = 20_000
    """Rows to generate, for kind=synthetic_fraud."""
    positive_rate: float = 0.02
    """Share of positive rows, for kind=synthetic_fraud."""
    drift: float = 0.0
    """Mean shift injected into some features (0 = none), for kind=synthetic_fraud."""
    drop_na: bool = False
    """Drop rows with missing values instead of failing."""
    val_fraction: float = 0.15
    """Share of rows held out for validation (early stopping, threshold choice)."""
    test_fraction: float = 0.2
    """Share of rows held out for the final test metrics."""
    seed: int = 42
    """Seed for generation and the stratified split."""


@dataclass
class ModelConfig:
    """The network."""

    name: str = "${dataset.model_name}"
    """Registry and endpoint name of the model."""
    framework: str = "pytorch"
    """Training framework: pytorch (DDP via torchrun) or tensorflow (Keras, MultiWorkerMirroredStrategy)."""
    hidden_dims: list[int] = field(default_factory=lambda: [64])
    """Widths of the hidden layers of the MLP."""
    dropout: float = 0.1
    """Dropout after each hidden layer, during training only."""


@dataclass
class ClusterTrainingConfig:
    """How the train step runs on a Kubernetes cluster (ignored by local runs)."""

    launcher: str = "local"
    """local (torchrun on this machine), in_pod (torchrun inside the kfp step's pod), pytorchjob (Kubeflow
    Training Operator v1) or trainjob (Kubeflow Trainer v2): the last two submit a job and wait for it."""
    num_nodes: int = 1
    """Pods (nodes) of a PyTorchJob/TrainJob; each runs training.nproc processes."""
    gpus_per_node: int = 0
    """nvidia.com/gpu requested per pod (0 = CPU); when set, training.nproc should equal it."""
    image: Optional[str] = None
    """Training image; None uses deploy.image."""
    namespace: Optional[str] = None
    """Namespace of the job; None uses deploy.namespace."""
    node_selector: dict[str, str] = field(default_factory=dict)
    """Node labels the training pods must match, e.g. {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}."""
    tolerations: list[dict[str, str]] = field(default_factory=list)
    """Kubernetes tolerations (key/operator/value/effect), e.g. for a tainted GPU node pool."""
    shm_size: str = "2Gi"
    """Size of the memory-backed /dev/shm volume (NCCL and DataLoader workers need more than 64Mi)."""
    cpu_request: str = "2"
    """CPU request per training pod."""
    memory_request: str = "8Gi"
    """Memory request per training pod."""
    runtime_ref: str = "torch-distributed"
    """TrainJob only: the ClusterTrainingRuntime to use."""
    job_timeout_s: int = 86_400
    """How long the submitting step waits for the job to finish."""


@dataclass
class TrainingConfig:
    """The optimisation loop and how it is launched.

    ``auto`` (the default of batch_size, epochs, learning_rate, early_stopping_patience, nproc and
    threads) follows the size of the training split and the machine, by the rule in
    :mod:`kfkit.training.plan`; the run prints what it chose. A number is used as given.
    """

    epochs: Any = "auto"
    """Passes over the training split (at most, with early stopping); auto: about 2,000 optimizer steps, 3 to 60."""
    batch_size: Any = "auto"
    """Rows per step per process; auto: a global batch of about rows/128 (128 to 4096), split over the processes."""
    learning_rate: Any = "auto"
    """AdamW learning rate; auto: 3e-3 * sqrt(global batch / 128)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    pos_weight: Optional[float] = None
    """Weight of positive rows in the loss; None sets negatives/positives of the training split."""
    nproc: Any = "auto"
    """Processes torchrun starts on this node; auto: one per GPU on CUDA, one on the CPU (an int runs that many)."""
    threads: Any = "auto"
    """Intra-op CPU threads per process; auto: $OMP_NUM_THREADS if set, else 1 on the CPU (cores/nproc on CUDA)."""
    backend: str = "auto"
    """torch.distributed backend: auto (nccl on CUDA, gloo on CPU), gloo or nccl."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    seed: int = 42
    """Seed for weight init and shuffling."""
    log_every: int = 10
    """Print a progress line every N epochs (and on the last)."""
    timeout_s: int = 3600
    """Fail the training step if torchrun runs longer than this."""
    early_stopping_patience: Any = "auto"
    """Stop after this many epochs without a better validation PR-AUC (0 = off); auto: 5 when the validation
    split has at least 100 rows of its rarer class, else off."""
    restore_best_weights: bool = True
    """Publish the weights of the epoch with the best validation PR-AUC (ties: lower loss), not the last epoch's."""
    checkpoint_every_steps: int = 0
    """Write a resumable checkpoint every N optimizer steps (0 = at the end of every epoch)."""
    checkpoint_dir: Optional[str] = None
    """Where checkpoints live; None = a folder next to the model output. A run finding one there resumes."""
    precision: str = "auto"
    """auto (bf16 autocast on CUDA when supported, fp32 on CPU), fp32, bf16 or fp16 (CUDA only)."""
    cluster: ClusterTrainingConfig = field(default_factory=ClusterTrainingConfig)
    """Cluster launch settings."""


@dataclass
class EvaluationConfig:
    """Test-set metrics."""

    threshold: float = 0.5
    """Probability at or above which a row is labelled positive, for threshold_rule=fixed."""
    threshold_rule: str = "max_f1"
    """How the operating threshold is picked on the validation split: fixed, max_f1 or recall_at_precision."""
    target_precision: float = 0.9
    """For threshold_rule=recall_at_precision: the lowest acceptable precision."""
    calibration_bins: int = 10
    """Bins of the reliability diagram and the expected calibration error."""
    segments: list[str] = field(default_factory=list)
    """Columns to break the test metrics down by (numeric columns are cut into quartiles)."""


@dataclass
class GateConfig:
    """What a candidate must clear before it is published and deployed."""

    enabled: bool = True
    """Evaluate the gate at all (off: every candidate passes, with a warning)."""
    min_metrics: dict[str, float] = field(default_factory=lambda: {"roc_auc": 0.8})
    """Absolute floors on test metrics, e.g. {roc_auc: 0.95, pr_auc: 0.5}."""
    compare_metrics: list[str] = field(default_factory=lambda: ["roc_auc", "pr_auc"])
    """Metrics on which the candidate must not be worse than the champion."""
    max_regression: float = 0.01
    """How much worse than the champion (absolute) a candidate may be on each compared metric."""
    champion_alias: str = "production"
    """Registry alias of the current champion; the candidate is scored on the same test rows."""


@dataclass
class RegistryConfig:
    """Where published versions live."""

    uri: str = "file://.kfkit/registry"
    """Registry root: file://PATH (relative paths resolve against the working directory) or s3://BUCKET/PREFIX."""
    endpoint: Optional[str] = None
    """S3 endpoint URL for s3:// registries, e.g. http://minio.kfkit:9000; None reads $AWS_ENDPOINT_URL
    (else AWS). Credentials come from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY, as KServe's do."""
    region: Optional[str] = None
    """S3 region; None reads $AWS_REGION."""
    promote_to: Optional[str] = "production"
    """Alias a version gets once it passes the gate and is published; None leaves the aliases as they are."""


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
    image: str = "ghcr.io/kfkit/kfkit:0.1.0"
    """Container image with kfkit installed, used by components and the serving runtime."""
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


@dataclass
class KfkitConfig:
    """The whole run."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    deploy: DeployConfig = field(default_factory=DeployConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    work_dir: str = ".kfkit"
    """Where runs keep their outputs, logs and server state."""


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="kfkit_schema", node=KfkitConfig)


def compose(overrides: list[str] | None = None, config_dir: Path | None = None) -> KfkitConfig:
    """Compose configs/config.yaml with command-line overrides into a validated config.

    Args:
        overrides: Hydra overrides such as ``["training.epochs=3", "dataset=synthetic_fraud"]``.
        config_dir: Folder holding config.yaml and its groups; defaults to kfkit's configs/.

    Returns:
        The typed, interpolated and validated configuration.

    Raises:
        ConfigError: an override names an unknown key or group option, or a value has the wrong type.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    _register()
    directory = Path(config_dir or CONFIG_DIR).resolve()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3", job_name="kfkit"):
            raw = hydra_compose(config_name="config", overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from e
    return from_dict(OmegaConf.to_container(raw, resolve=False))


def from_dict(data: dict[str, Any]) -> KfkitConfig:
    """Validate a plain dict (as it travels between pipeline steps) against the schema.

    Raises:
        ConfigError: unknown key, wrong type, missing required value, or an invalid choice.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(KfkitConfig), _integral_floats_to_int(data))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from e
    assert isinstance(cfg, KfkitConfig)
    validate(cfg)
    return cfg


def to_dict(cfg: KfkitConfig) -> dict[str, Any]:
    """A JSON-ready dict of the config (what components receive).

    Keys whose value is None are left out: a kfp struct parameter cannot hold null, and every
    optional field defaults to None, so :func:`from_dict` restores them unchanged.
    """
    return _drop_none(dataclasses.asdict(cfg))


def _integral_floats_to_int(value: Any) -> Any:
    """Undo kfp turning ints into doubles: struct parameters are protobuf Structs (1000 -> 1000.0).

    OmegaConf refuses 1000.0 for an int field but takes 1000 for a float field, so integral floats
    become ints before validation.
    """
    if isinstance(value, dict):
        return {k: _integral_floats_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_to_int(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def validate(cfg: KfkitConfig) -> None:
    """Check choices and ranges that a type alone does not catch.

    Raises:
        ConfigError: naming the key, the value, and what would be accepted.
    """
    _choice("dataset.kind", cfg.dataset.kind, DATASET_KINDS)
    _choice("model.framework", cfg.model.framework, FRAMEWORKS)
    _choice("training.backend", cfg.training.backend, BACKENDS)
    _choice("training.device", cfg.training.device, DEVICES)
    _choice("deploy.target", cfg.deploy.target, DEPLOY_TARGETS)
    _choice("training.precision", cfg.training.precision, PRECISIONS)
    _choice("training.cluster.launcher", cfg.training.cluster.launcher, TRAIN_LAUNCHERS)
    _choice("evaluation.threshold_rule", cfg.evaluation.threshold_rule, THRESHOLD_RULES)
    if cfg.dataset.kind == "csv" and not cfg.dataset.path:
        raise ConfigError("dataset=csv needs a file: pass dataset.path=/path/to/data.csv (or .parquet)")
    holdout = cfg.dataset.val_fraction + cfg.dataset.test_fraction
    if not (0 < cfg.dataset.val_fraction < 1 and 0 < cfg.dataset.test_fraction < 1 and holdout < 0.9):
        raise ConfigError(
            f"dataset.val_fraction={cfg.dataset.val_fraction} and dataset.test_fraction="
            f"{cfg.dataset.test_fraction} must each be in (0, 1) and leave at least 10% for training"
        )
    if not 0 < cfg.dataset.positive_rate < 1:
        raise ConfigError(f"dataset.positive_rate={cfg.dataset.positive_rate} must be in (0, 1)")
    _check_training_auto(cfg.training)
    for key, value in (
        ("dataset.n_rows", cfg.dataset.n_rows),
        ("training.cluster.num_nodes", cfg.training.cluster.num_nodes),
        ("evaluation.calibration_bins", cfg.evaluation.calibration_bins),
    ):
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    if not cfg.model.hidden_dims or min(cfg.model.hidden_dims) < 1:
        raise ConfigError(f"model.hidden_dims={cfg.model.hidden_dims} needs one or more positive widths")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout={cfg.model.dropout} must be in [0, 1)")
    if not 0 < cfg.evaluation.threshold < 1:
        raise ConfigError(f"evaluation.threshold={cfg.evaluation.threshold} must be in (0, 1)")
    for key, value in (
        ("training.checkpoint_every_steps", cfg.training.checkpoint_every_steps),
        ("training.cluster.gpus_per_node", cfg.training.cluster.gpus_per_node),
        ("gate.max_regression", cfg.gate.max_regression),
    ):
        if value < 0:
            raise ConfigError(f"{key}={value} must not be negative")
    if not 0 < cfg.evaluation.target_precision < 1:
        raise ConfigError(f"evaluation.target_precision={cfg.evaluation.target_precision} must be in (0, 1)")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cfg.model.name) or len(cfg.model.name) > 63:
        raise ConfigError(
            f"model.name={cfg.model.name!r} is not a valid Kubernetes name: use lower-case letters, "
            "digits and '-', at most 63 characters (e.g. model.name=fraud-mlp)"
        )
    check_serving(cfg.serving)
    _check_drift(cfg.drift)


def _check_drift(drift: DriftConfig) -> None:
    """drift.* checks: the detector's own (one set of rules, so a config that passes here builds there)."""
    from kfkit.serving.drift.settings import DriftSettings

    DriftSettings.from_mapping(dataclasses.asdict(drift), where="drift")


# training.* keys that take "auto" or a number: (type, smallest value, what the number means).
_TRAINING_AUTO = {
    "epochs": (int, 1, "a whole number of epochs"),
    "batch_size": (int, 1, "a whole number of rows per process"),
    "learning_rate": (float, 0.0, "a positive learning rate"),
    "early_stopping_patience": (int, 0, "a whole number of epochs (0 = off)"),
    "nproc": (int, 1, "a whole number of processes"),
    "threads": (int, 1, "a whole number of threads per process"),
}


def _check_training_auto(training: TrainingConfig) -> None:
    """The training.* settings typed ``Any`` (auto or a number): check them, and make numbers numbers.

    kfp passes 1.0 as 1 (see :func:`_integral_floats_to_int`) and an ``Any`` field keeps what it gets, so
    a float setting becomes a float here; bools and numeric strings are refused, not guessed at.
    """
    for name, (kind, low, meaning) in _TRAINING_AUTO.items():
        value = getattr(training, name)
        if value == "auto":
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        whole = number and (kind is float or float(value).is_integer())
        if not whole or (value <= low if kind is float else value < low):
            bound = "above 0" if kind is float else f"at least {low}"
            raise ConfigError(f"training.{name}={value!r} must be auto or {meaning} ({bound})")
        setattr(training, name, kind(value))


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


SERVER_OPTIONS = (
    "max_batch_size",
    "max_batch_latency_ms",
    "max_body_bytes",
    "payload_log_url",
    "payload_log_queue_size",
)
"""``serving.*`` fields the model server takes as flags (``--max-batch-size`` ...); see :func:`server_flags`."""


def check_serving(serving: ServingConfig, *, key: Any = "serving.{}".format) -> None:
    """The bounds of the serving options: the one check for the config and the server's own flags.

    Args:
        serving: The options to check.
        key: Turns a field name into the name the user wrote, for the message (``serving.max_batch_size``
            from a config, ``--max-batch-size`` from the server's command line).

    Raises:
        ConfigError: naming the key, the value and the bound.
    """
    for name in ("max_batch_size", "max_body_bytes", "payload_log_queue_size"):
        if getattr(serving, name) < 1:
            raise ConfigError(f"{key(name)}={getattr(serving, name)} must be at least 1")
    if serving.max_batch_latency_ms < 0:
        raise ConfigError(f"{key('max_batch_latency_ms')}={serving.max_batch_latency_ms} must not be negative")
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
    if payload_logging:
        flags.append(f"--payload-log-queue-size={serving.payload_log_queue_size}")
        if serving.payload_log_url:  # None: no payload logging
            flags.append(f"--payload-log-url={serving.payload_log_url}")
    return flags


def _one_line(error: Exception) -> str:
    """Hydra and OmegaConf put the useful part first and context on later lines; keep it short."""
    text = str(error).strip()
    cause = error.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text}\n{str(cause).strip()}"
    parts: list[str] = []
    listing = False  # inside "Available options in 'dataset':" and the names under it
    for line in (line.strip() for line in text.splitlines()):
        if line.startswith("Config search path"):
            break  # where Hydra looked: noise to a user who mistyped an option
        if not line or line.startswith(_NOISE):
            continue
        if listing:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            continue
        parts.append(line)
        listing = line.endswith(":")
    if hint := _new_map_key_hint(text):
        parts.append(hint)
    return "; ".join(parts) + "; see `kfkit run --help` for the config groups and keys"


def _new_map_key_hint(text: str) -> str | None:
    """Hydra refuses a new key under a map field (gate.min_metrics.pr_auc=0.5) unless it starts with '+'.

    Its own advice is dropped as noise because it is wrong for typed fields, so give it back only where
    the parent really is a map (a ``dict[...]`` field of the schema).
    """
    import typing

    match = re.search(r"Could not override '([\w.]+)'", text)
    if not match or "." not in match.group(1):
        return None
    parent, _, _ = match.group(1).rpartition(".")
    node: Any = KfkitConfig
    for name in parent.split("."):
        if not dataclasses.is_dataclass(node) or name not in (hints := typing.get_type_hints(node)):
            return None
        node = hints[name]
    if typing.get_origin(node) is dict:
        return f"{parent} is a map: add a new key with a leading '+', e.g. +{match.group(1)}=VALUE"
    return None


# Hydra/OmegaConf lines that do not help: internals, and advice ("+key=value") a typed schema refuses.
_NOISE = ("object_type=", "reference_type=", "Set the environment", "To append to your config")
