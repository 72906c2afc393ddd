"""What every compiled step gets on a cluster besides train's placement: images, caching, retries, S3 secrets.

Like placement, these are compiled into the IR YAML from the config composed at compile time (the run's
``config`` parameter cannot change a pod spec). kfp.local runs the pipeline without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

    from kfkit.config import KfkitConfig

__all__ = ["apply_cluster_settings", "UNCACHED_STEPS", "REGISTRY_STEPS"]

UNCACHED_STEPS = ("prep", "gate", "publish", "deploy", "smoke_test")
"""Steps kfp must always run. prep reads data that changes under the same path (a retrain run's newest rows);
gate reads the current champion; publish, deploy and smoke_test act on the registry and the cluster, and a
cached one would report a version or an endpoint of an earlier run. train and evaluate are functions of
their inputs, so a rerun with the same inputs may reuse them."""
REGISTRY_STEPS = ("gate", "publish", "deploy", "smoke_test")
"""Steps that read or write the registry, and so get the S3 credentials (no other step sees them)."""


def apply_cluster_settings(tasks: dict[str, PipelineTask], cfg: KfkitConfig) -> None:
    """Set every step's image, caching and secrets, train's retry policy and prep's claim, from ``cfg``.

    Args:
        tasks: The pipeline's tasks by step name (prep, train, evaluate, gate, publish, deploy, smoke_test).
        cfg: The compile-time config: ``images.main``, ``kubeflow`` (s3_secret, train retries), ``registry.uri``.
    """
    from kfp import kubernetes

    kf = cfg.kubeflow
    s3 = cfg.registry.uri.startswith("s3://")
    for name, task in tasks.items():
        # training.cluster.image (set by the placement) wins for train: a CUDA build of the same code.
        if not (name == "train" and cfg.training.cluster.image):
            task.set_container_image(cfg.images.main)
        if name in UNCACHED_STEPS:
            task.set_caching_options(False)
        if s3 and kf.s3_secret and name in REGISTRY_STEPS:
            kubernetes.use_secret_as_env(task, secret_name=kf.s3_secret, secret_key_to_env=dict(kf.s3_secret_keys))
    if cfg.data.engine == "spark" and cfg.data.spark.master == "k8s":
        from kfkit.training.jobs import SHARED_MOUNT, SHARED_PVC

        # The SparkApplication reads the input from and writes the splits to the shared claim; prep stages both.
        kubernetes.mount_pvc(tasks["prep"], pvc_name=SHARED_PVC, mount_path=SHARED_MOUNT)
    if kf.train_retries:
        tasks["train"].set_retry(
            num_retries=kf.train_retries,
            backoff_duration=f"{kf.retry_backoff_s}s",
            backoff_factor=2.0,
            backoff_max_duration=f"{max(3600, kf.retry_backoff_s * 2**kf.train_retries)}s",
        )
