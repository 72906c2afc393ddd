"""The config schema kfkit owns: one dataclass per group, a docstring per field (YAML only selects and overrides).

The groups that serve a model (serving, drift, retrain, deploy) are in :mod:`kfkit.config.serving`;
:class:`KfkitConfig` gathers them all.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING

from kfkit.config.cluster import ImagesConfig, KubeflowConfig
from kfkit.config.data import DataConfig
from kfkit.config.features import FeaturesConfig
from kfkit.config.serving import DeployConfig, DriftConfig, RetrainConfig, ServingConfig

__all__ = [
    "DatasetConfig",
    "ModelConfig",
    "TrainingConfig",
    "ClusterTrainingConfig",
    "EvaluationConfig",
    "GateConfig",
    "RegistryConfig",
    "KfkitConfig",
    "CONFIG_DIR",
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
    data: str = "memory"
    """How each rank reads its split: memory (load it whole) or stream (its Parquet shards, in row groups)."""
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
    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    kubeflow: KubeflowConfig = field(default_factory=KubeflowConfig)
    work_dir: str = ".kfkit"
    """Where runs keep their outputs, logs and server state."""
