"""Config groups for running on a cluster: the container images, and submitting to Kubeflow Pipelines.

``images`` names the two images every cluster object runs (kfkit and the drift detector); the compiled
pipeline's steps and the KServe ServingRuntime take ``images.main`` (``deploy.image`` defaults to it).
``kubeflow`` says where and how ``kfkit submit`` (and a retrain run on a cluster) starts the pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from kfkit.errors import ConfigError

__all__ = ["ImagesConfig", "KubeflowConfig", "RecurringConfig", "AUTH_MODES", "DEFAULT_IMAGE", "check"]

DEFAULT_IMAGE = "ghcr.io/kfkit/kfkit:0.1.0"
"""``images.main`` with the default registry and tag (what a component runs in before compile sets it)."""
AUTH_MODES = ("auto", "in_pod", "token", "none")
# name[:tag][@sha256:<64 hex>], the name with an optional registry host[:port]; lower-case path parts.
_IMAGE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


@dataclass
class ImagesConfig:
    """The container images, as ``<registry>/kfkit:<tag>`` and ``<registry>/kfkit-drift:<tag>`` by default.

    Pin by digest by setting a full reference: ``images.main=ghcr.io/acme/kfkit@sha256:<digest>``.
    """

    registry: str = "ghcr.io/kfkit"
    """Registry and path the images are pushed to, e.g. registry.example.com/ml (no trailing '/')."""
    tag: str = "0.1.0"
    """Tag both default references use (the build's tag, e.g. a release or a git commit)."""
    main: str = "${images.registry}/kfkit:${images.tag}"
    """kfkit image: every pipeline step and the KServe ServingRuntime (through deploy.image); a full
    reference, optionally ``@sha256:<digest>``."""
    drift: str = "${images.registry}/kfkit-drift:${images.tag}"
    """Drift detector image (alibi-detect's own environment); a full reference, optionally by digest."""
    require_digest: bool = False
    """Refuse references without ``@sha256:`` (for production: a tag can be moved, a digest cannot)."""


@dataclass
class RecurringConfig:
    """A recurring run of the uploaded pipeline version (``kfkit submit`` creates it instead of one run)."""

    cron: Optional[str] = None
    """KFP cron schedule, 6 fields with seconds first: '0 0 3 * * *' is every day at 03:00 (UTC)."""
    interval_s: Optional[int] = None
    """Or: seconds between runs (a periodic schedule). Exactly one of cron and interval_s starts a schedule."""
    name: Optional[str] = None
    """Display name of the recurring run; None: ``<pipeline_name>-<model.name>``. A recurring run of that name
    in the experiment is replaced, so a new submit moves the schedule to the new version."""
    max_concurrency: int = 1
    """Runs of this schedule that may run at once (1: a slow run delays the next, never overlaps it)."""
    catchup: bool = False
    """Start every missed run after a pause (backfill); false starts only the latest one."""
    start_time: Optional[str] = None
    """RFC 3339 time the schedule starts, e.g. 2027-01-01T00:00:00Z; None: now."""
    end_time: Optional[str] = None
    """RFC 3339 time the schedule ends; None: never."""


@dataclass
class KubeflowConfig:
    """Where and how runs are submitted to Kubeflow Pipelines (``kfkit submit``, cluster retrain runs)."""

    host: Optional[str] = None
    """KFP API URL, e.g. http://ml-pipeline.kubeflow:8888 in the cluster or https://kubeflow.example.com/pipeline
    through the ingress; ``kfkit submit --host`` overrides it."""
    ui_url: Optional[str] = None
    """Base of the run links printed, e.g. https://kubeflow.example.com/_/pipeline; None: the host."""
    namespace: Optional[str] = None
    """Profile namespace of a multi-user Kubeflow (required there); passed explicitly on every call."""
    experiment: str = "kfkit"
    """Experiment the runs are filed under (created if missing)."""
    pipeline_name: str = "kfkit-training"
    """The one pipeline every compiled package is uploaded to, as a new version."""
    shared_pipeline: bool = False
    """Upload the pipeline shared (visible to every namespace) rather than into kubeflow.namespace."""
    auth: str = "auto"
    """auto (token_file, else $KFKIT_KFP_TOKEN, else the pod's projected token when mounted, else none),
    in_pod (the projected service-account token, audience pipelines.kubeflow.org), token (token_file) or none."""
    token_file: Optional[str] = None
    """File holding a Kubernetes token for use from outside the cluster, e.g. the output of
    ``kubectl -n NS create token default-editor --audience=pipelines.kubeflow.org``."""
    service_account: Optional[str] = None
    """Kubernetes service account the run's pods use; None: the profile's default-editor."""
    poll_s: float = 10.0
    """Seconds between reads of a run's state (``--watch``)."""
    watch_timeout_s: float = 86_400.0
    """How long ``--watch`` follows a run before giving up (the run itself goes on)."""
    s3_secret: Optional[str] = None
    """Secret with the S3 credentials (e.g. kfkit-s3, as manifests/README.md creates it, in the run's
    namespace), given as env to the steps that read or write an s3:// registry; None: the pods get
    credentials otherwise (their service account's IAM role / workload identity)."""
    s3_secret_keys: dict[str, str] = field(
        default_factory=lambda: {key: key for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    )
    """Keys of s3_secret -> the environment variable each becomes."""
    train_retries: int = 2
    """Times the train step is retried after a failure (a node lost, a preempted GPU); it resumes from its
    checkpoint when training.checkpoint_dir is on a shared volume."""
    retry_backoff_s: int = 60
    """Wait before the first retry of train; doubled on each next one."""
    recurring: RecurringConfig = field(default_factory=RecurringConfig)
    """A recurring run instead of one run."""


def check(images: ImagesConfig, kubeflow: KubeflowConfig) -> None:
    """Check the ``images`` and ``kubeflow`` groups.

    Raises:
        ConfigError: naming the key, the value, and what would be accepted.
    """
    for key, value in (("images.main", images.main), ("images.drift", images.drift)):
        if not _IMAGE.fullmatch(value):
            raise ConfigError(
                f"{key}={value!r} is not an image reference; use REGISTRY/NAME:TAG or REGISTRY/NAME@sha256:<64 hex>, "
                "e.g. ghcr.io/acme/kfkit:1.2.0"
            )
        if images.require_digest and "@sha256:" not in value:
            raise ConfigError(
                f"{key}={value!r} has no digest and images.require_digest=true; pin it: "
                f"{key}=REGISTRY/NAME@sha256:<digest> (the digest the image push reported)"
            )
    kf = kubeflow
    if kf.auth not in AUTH_MODES:
        raise ConfigError(f"kubeflow.auth={kf.auth!r} is not one of {', '.join(AUTH_MODES)}")
    if kf.auth == "token" and not kf.token_file:
        raise ConfigError("kubeflow.auth=token needs kubeflow.token_file=PATH (a file holding a Kubernetes token)")
    if kf.namespace is not None and not _DNS_LABEL.fullmatch(kf.namespace):
        raise ConfigError(f"kubeflow.namespace={kf.namespace!r} is not a Kubernetes namespace name (e.g. team-a)")
    if not kf.pipeline_name.strip() or not kf.experiment.strip():
        raise ConfigError("kubeflow.pipeline_name and kubeflow.experiment must not be empty")
    for key, value in (("kubeflow.poll_s", kf.poll_s), ("kubeflow.watch_timeout_s", kf.watch_timeout_s)):
        if value <= 0:
            raise ConfigError(f"{key}={value} must be above 0")
    for key, value in (("kubeflow.train_retries", kf.train_retries), ("kubeflow.retry_backoff_s", kf.retry_backoff_s)):
        if value < 0:
            raise ConfigError(f"{key}={value} must not be negative")
    _check_recurring(kf.recurring)


def _check_recurring(recurring: RecurringConfig) -> None:
    if recurring.cron is not None and recurring.interval_s is not None:
        raise ConfigError(
            f"kubeflow.recurring has both cron={recurring.cron!r} and interval_s={recurring.interval_s}; set one"
        )
    if recurring.cron is not None and len(recurring.cron.split()) != 6:
        raise ConfigError(
            f"kubeflow.recurring.cron={recurring.cron!r} has {len(recurring.cron.split())} fields; KFP's cron has 6, "
            "seconds first: '0 0 3 * * *' runs every day at 03:00"
        )
    if recurring.interval_s is not None and recurring.interval_s < 60:
        raise ConfigError(f"kubeflow.recurring.interval_s={recurring.interval_s} must be at least 60 seconds")
    if recurring.max_concurrency < 1:
        raise ConfigError(f"kubeflow.recurring.max_concurrency={recurring.max_concurrency} must be at least 1")
