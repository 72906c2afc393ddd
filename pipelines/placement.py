"""Where the train step's pod runs on a cluster: resources, GPUs, node selector, tolerations, volumes.

Placement is part of the compiled pipeline (the pod spec is fixed when the IR YAML is written), so it
comes from the config composed at compile time, not from the run's ``config`` parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfp.dsl import PipelineTask

    from kfkit.config import KfkitConfig

__all__ = ["apply_train_placement", "GPU_RESOURCE", "SUBMITTER_CPU", "SUBMITTER_MEMORY"]

GPU_RESOURCE = "nvidia.com/gpu"
# A step that only stages files and polls a job's status needs little.
SUBMITTER_CPU = "250m"
SUBMITTER_MEMORY = "512Mi"
# The submitting pod outlives the job's own deadline by this much, so it can report the timeout itself.
_SUBMITTER_GRACE_S = 600


def apply_train_placement(task: PipelineTask, cfg: KfkitConfig) -> PipelineTask:
    """Set the train task's pod placement for ``training.cluster.launcher`` and return the task.

    - ``local``: nothing (kfp.local runs; the pod keeps kfp's defaults).
    - ``in_pod``: torchrun runs inside this pod, so it gets the training resources: cpu/memory
      requests, ``gpus_per_node`` x nvidia.com/gpu, node selector, tolerations, a memory-backed
      /dev/shm of ``shm_size``, and ``training.cluster.image`` when set.
    - ``pytorchjob`` / ``trainjob``: the pod only submits and waits: small requests, the shared
      training claim mounted (data and model travel through it), and a pod deadline just past
      ``job_timeout_s``. The job's own pods get the GPUs (see :mod:`kfkit.training.cluster`).

    Raises:
        ConfigError: ``in_pod`` with ``num_nodes > 1`` (one pod is one node: use pytorchjob or trainjob),
            or a toleration with keys Kubernetes does not know.
    """
    from kfp import kubernetes

    from kfkit.training.jobs import SHARED_MOUNT, SHARED_PVC

    cluster = cfg.training.cluster
    if cluster.launcher == "local":
        return task
    if cluster.launcher in ("pytorchjob", "trainjob"):
        task.set_cpu_request(SUBMITTER_CPU).set_memory_request(SUBMITTER_MEMORY)
        kubernetes.mount_pvc(task, pvc_name=SHARED_PVC, mount_path=SHARED_MOUNT)
        kubernetes.set_timeout(task, cluster.job_timeout_s + _SUBMITTER_GRACE_S)
        return task
    if cluster.num_nodes > 1:
        raise ConfigError(
            f"training.cluster.launcher=in_pod runs on one pod, but training.cluster.num_nodes={cluster.num_nodes}; "
            "use launcher=pytorchjob or trainjob for several nodes"
        )
    task.set_cpu_request(cluster.cpu_request).set_memory_request(cluster.memory_request)
    if cluster.gpus_per_node:
        task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(cluster.gpus_per_node)
    if cluster.image:
        task.set_container_image(cluster.image)
    for key, value in cluster.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for toleration in cluster.tolerations:
        unknown = set(toleration) - {"key", "operator", "value", "effect"}
        if unknown:
            raise ConfigError(
                f"training.cluster.tolerations entry {toleration} has unknown keys {sorted(unknown)}; "
                "use key, operator, value, effect"
            )
        kubernetes.add_toleration(task, **toleration)
    # NCCL and DataLoader workers need more shared memory than a container's default 64Mi.
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=cluster.shm_size
    )
    return task
