"""The Kubeflow PyTorchJob and TrainJob manifests a cluster train step submits, built from the config.

Where the data and the model travel: a **shared ReadWriteMany PersistentVolumeClaim** (default name
``kfkit-training``, mounted at ``/mnt/kfkit-training``) that the kfp train step and every job pod mount.
The train step copies the prepared splits and the config JSON to ``<mount>/<job>/``, the job's pods run
``torchrun ... -m kfkit.training.worker --prepared <mount>/<job>/prepared --config <mount>/<job>/config.json
--out <mount>/<job>/model`` (global rank 0 writes the model there, and checkpoints land beside it, so a
restarted pod resumes), and the step copies ``model/`` back into its kfp output artifact. A PVC needs no
object-store credentials in the job pods; the platform team provides one RWX claim per namespace
(NFS, CephFS, EFS, Filestore, ...).

Rendezvous: both operators inject torchrun's ``PET_NNODES``, ``PET_NODE_RANK``, ``PET_MASTER_ADDR`` and
``PET_MASTER_PORT`` into the pods (Training Operator v1 for a PyTorchJob with a Master replica; Trainer v2's
torch plugin for a TrainJob), so the command only names ``--nnodes`` and ``--nproc_per_node``.

Submitting a job and waiting for it is :mod:`kfkit.training.cluster`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kfkit import k8s
from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = [
    "JOB_KINDS",
    "SHARED_PVC",
    "SHARED_MOUNT",
    "JobPaths",
    "job_paths",
    "job_name",
    "training_command",
    "build_pytorchjob",
    "build_trainjob",
    "build_training_job",
    "render_training_job",
    "JOB_APIS",
    "POD_SELECTORS",
]

JOB_KINDS = ("pytorchjob", "trainjob")
SHARED_PVC = "kfkit-training"
"""ReadWriteMany claim shared by the kfp train step and the job pods."""
SHARED_MOUNT = "/mnt/kfkit-training"
"""Where that claim is mounted, in the step's pod and in every job pod."""
SHM_VOLUME = "dshm"
SHARED_VOLUME = "kfkit-shared"
TMP_VOLUME = "tmp"
# (group, version, plural, kind, success condition): PyTorchJob reports Succeeded, TrainJob Complete.
JOB_APIS = {
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", "Succeeded"),
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", "Complete"),
}
POD_SELECTORS = {  # labels the operators put on a job's pods, to fetch their logs on failure
    "PyTorchJob": "training.kubeflow.org/job-name",
    "TrainJob": "jobset.sigs.k8s.io/jobset-name",
}
_TOLERATION_KEYS = {"key", "operator", "value", "effect"}
_PYTORCHJOB_PORT = 23456  # the Training Operator's default master port, named pytorchjob-port
# PyTorchJob pods are <name>-worker-<i>; with headless Services named the same, 63 characters must hold.
_MAX_JOB_NAME = 48


@dataclass(frozen=True)
class JobPaths:
    """Folders and files of one job on the shared volume, as the pods see them."""

    prepared: str
    config: str
    out: str


def job_paths(name: str, mount: str = SHARED_MOUNT) -> JobPaths:
    """Where job ``name`` reads its inputs and writes its model under ``mount``."""
    root = f"{mount.rstrip('/')}/{name}"
    return JobPaths(prepared=f"{root}/prepared", config=f"{root}/config.json", out=f"{root}/model")


def job_name(cfg: KfkitConfig, suffix: str | None = None) -> str:
    """A DNS-1123 job name: ``<model>-train-<suffix>`` (a random 6-hex suffix by default)."""
    suffix = suffix or secrets.token_hex(3)
    stem = cfg.model.name[: _MAX_JOB_NAME - len(suffix) - len("-train-")].rstrip("-")
    return f"{stem}-train-{suffix}"


def training_command(cfg: KfkitConfig, paths: JobPaths) -> list[str]:
    """The container command: torchrun (``python -m torch.distributed.run``) starting the DDP worker.

    Same worker and arguments as :func:`kfkit.training.launcher.torchrun_command`, without
    ``--standalone``: node rank and master address come from the operator's ``PET_*`` variables.
    """
    return [
        "python", "-m", "torch.distributed.run",
        f"--nnodes={cfg.training.cluster.num_nodes}", f"--nproc_per_node={_nproc(cfg)}",
        "-m", "kfkit.training.worker",
        "--prepared", paths.prepared, "--config", paths.config, "--out", paths.out,
    ]  # fmt: skip


def _check(cfg: KfkitConfig) -> None:
    cluster = cfg.training.cluster
    if cfg.model.framework != "pytorch":
        raise ConfigError(
            f"training.cluster.launcher={cluster.launcher} runs the PyTorch DDP worker; model.framework="
            f"{cfg.model.framework!r} trains with launcher=local or in_pod (MultiWorkerMirroredStrategy)"
        )
    if cluster.gpus_per_node and _nproc(cfg) != cluster.gpus_per_node:
        raise ConfigError(
            f"training.nproc={cfg.training.nproc} but training.cluster.gpus_per_node={cluster.gpus_per_node}: "
            f"run one process per GPU (training.nproc={cluster.gpus_per_node})"
        )
    for toleration in cluster.tolerations:
        unknown = set(toleration) - _TOLERATION_KEYS
        if unknown:
            raise ConfigError(
                f"training.cluster.tolerations entry {toleration} has unknown keys {sorted(unknown)}; "
                f"use {sorted(_TOLERATION_KEYS)}"
            )


def _metadata(cfg: KfkitConfig, name: str) -> dict[str, Any]:
    namespace = cfg.training.cluster.namespace or cfg.deploy.namespace
    return {"name": name, "namespace": namespace, "labels": _labels(cfg)}


def _labels(cfg: KfkitConfig) -> dict[str, str]:
    return k8s.labels(name="kfkit", instance=cfg.model.name, component="training")


def _resources(cfg: KfkitConfig) -> dict[str, dict[str, Any]]:
    # Limits equal to requests: Guaranteed QoS, so a node under memory pressure evicts a day-long job last,
    # and a runaway process is OOM-killed in its own pod. The memory-backed /dev/shm counts against the limit.
    cluster = cfg.training.cluster
    requests: dict[str, Any] = {"cpu": cluster.cpu_request, "memory": cluster.memory_request}
    if cluster.gpus_per_node:  # extended resources: request and limit must be equal
        requests["nvidia.com/gpu"] = cluster.gpus_per_node
    return k8s.resources(requests)


def _nproc(cfg: KfkitConfig) -> int:
    from kfkit.training.plan import pod_nproc

    return pod_nproc(cfg.training)


def _env(cfg: KfkitConfig) -> list[dict[str, str]]:
    # Intra-op threads as the local launcher sets them: training.threads, else one per CPU worker process
    # (the rule in kfkit.training.plan); GPU pods keep torch's default.
    tc = cfg.training
    if tc.threads != "auto":
        threads = str(tc.threads)
    else:
        threads = "" if tc.cluster.gpus_per_node else "1"
    # HOME: caches (~/.cache, ~/.triton) go to the writable /tmp; the root filesystem is read-only.
    env = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "HOME", "value": "/tmp"}]
    return env + ([{"name": "OMP_NUM_THREADS", "value": threads}] if threads else [])


def _mounts(mount: str) -> list[dict[str, str]]:
    return [
        {"name": SHM_VOLUME, "mountPath": "/dev/shm"},
        {"name": SHARED_VOLUME, "mountPath": mount},
        {"name": TMP_VOLUME, "mountPath": "/tmp"},  # torchrun's logs and temp files
    ]


def _volumes(cfg: KfkitConfig, pvc: str) -> list[dict[str, Any]]:
    # NCCL and DataLoader workers use /dev/shm; a container's default 64Mi is too small for them.
    return [
        {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": cfg.training.cluster.shm_size}},
        {"name": SHARED_VOLUME, "persistentVolumeClaim": {"claimName": pvc}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]


def _placement(cfg: KfkitConfig) -> dict[str, Any]:
    cluster = cfg.training.cluster
    placement: dict[str, Any] = {}
    if cluster.node_selector:
        placement["nodeSelector"] = dict(cluster.node_selector)
    if cluster.tolerations:
        placement["tolerations"] = [dict(t) for t in cluster.tolerations]
    return placement


def build_pytorchjob(
    cfg: KfkitConfig, *, name: str, paths: JobPaths, pvc: str = SHARED_PVC, mount: str = SHARED_MOUNT
) -> dict[str, Any]:
    """A ``kubeflow.org/v1`` PyTorchJob (Training Operator): one Master and ``num_nodes - 1`` Workers.

    Each pod runs ``training.nproc`` processes, requests ``gpus_per_node`` GPUs, and mounts the shared
    claim, a memory-backed /dev/shm and a /tmp emptyDir; it runs as UID 1000 under the "restricted" Pod
    Security Standard with a read-only root filesystem and no API token. restartPolicy ExitCode restarts
    a pod killed by a signal (preemption, OOM kill), which then resumes from its checkpoint; a Python error
    fails the job at once.

    Raises:
        ConfigError: the config cannot be run as a PyTorchJob (framework, GPU/process counts, tolerations).
    """
    _check(cfg)
    cluster = cfg.training.cluster
    container = {
        "name": "pytorch",  # the Training Operator finds the training container by this name
        "image": cluster.image or cfg.deploy.image,
        "command": training_command(cfg, paths),
        "env": _env(cfg),
        "ports": [{"name": "pytorchjob-port", "containerPort": _PYTORCHJOB_PORT, "protocol": "TCP"}],
        "resources": _resources(cfg),
        "securityContext": k8s.container_security_context(),
        "volumeMounts": _mounts(mount),
    }
    pod = {
        "automountServiceAccountToken": False,  # the worker never calls the Kubernetes API
        "securityContext": k8s.pod_security_context(),
        "containers": [container],
        "volumes": _volumes(cfg, pvc),
        **_placement(cfg),
    }
    template = {"metadata": {"labels": _labels(cfg)}, "spec": pod}
    replicas = {"Master": {"replicas": 1, "restartPolicy": "ExitCode", "template": template}}
    if cluster.num_nodes > 1:
        replicas["Worker"] = {"replicas": cluster.num_nodes - 1, "restartPolicy": "ExitCode", "template": template}
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(cfg, name),
        "spec": {
            "nprocPerNode": str(_nproc(cfg)),
            "runPolicy": {
                "activeDeadlineSeconds": cluster.job_timeout_s,
                "backoffLimit": 3,
                "cleanPodPolicy": "None",  # keep finished pods (and their logs) until the job is deleted
                "ttlSecondsAfterFinished": 86_400,
            },
            "pytorchReplicaSpecs": replicas,
        },
    }


def build_trainjob(
    cfg: KfkitConfig, *, name: str, paths: JobPaths, pvc: str = SHARED_PVC, mount: str = SHARED_MOUNT
) -> dict[str, Any]:
    """A ``trainer.kubeflow.org/v1alpha1`` TrainJob (Trainer v2) on ClusterTrainingRuntime ``runtime_ref``.

    The runtime (e.g. ``torch-distributed``) supplies the JobSet with replicated job ``node`` and
    container ``node``; the trainer section sets image, command, nodes, processes and resources, and a
    runtime patch adds node selector, tolerations and the /dev/shm and shared volumes.

    Raises:
        ConfigError: the config cannot be run as a TrainJob.
    """
    _check(cfg)
    cluster = cfg.training.cluster
    pod_patch = {
        **_placement(cfg),
        "securityContext": k8s.pod_security_context(),
        "volumes": _volumes(cfg, pvc),
        "containers": [
            {"name": "node", "securityContext": k8s.container_security_context(), "volumeMounts": _mounts(mount)}
        ],
    }
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": _metadata(cfg, name),
        "spec": {
            "runtimeRef": {
                "apiGroup": "trainer.kubeflow.org",
                "kind": "ClusterTrainingRuntime",
                "name": cluster.runtime_ref,
            },
            "activeDeadlineSeconds": cluster.job_timeout_s,
            "trainer": {
                "image": cluster.image or cfg.deploy.image,
                "command": training_command(cfg, paths),
                "env": _env(cfg),
                "numNodes": cluster.num_nodes,
                "numProcPerNode": _nproc(cfg),
                "resourcesPerNode": _resources(cfg),
            },
            "runtimePatches": [
                {
                    "manager": k8s.MANAGER,
                    "trainingRuntimeSpec": {
                        "template": {
                            "spec": {
                                "replicatedJobs": [
                                    {"name": "node", "template": {"spec": {"template": {"spec": pod_patch}}}}
                                ]
                            }
                        }
                    },
                }
            ],
        },
    }


def build_training_job(
    cfg: KfkitConfig,
    kind: str,
    *,
    name: str | None = None,
    pvc: str = SHARED_PVC,
    mount: str = SHARED_MOUNT,
) -> dict[str, Any]:
    """The PyTorchJob (``kind="pytorchjob"``) or TrainJob (``"trainjob"``) for ``cfg``, as a plain dict.

    Raises:
        ConfigError: unknown kind, or a config the job cannot run.
    """
    if kind not in JOB_KINDS:
        raise ConfigError(f"training job kind {kind!r} is not one of {', '.join(JOB_KINDS)}")
    name = name or job_name(cfg)
    builder = build_pytorchjob if kind == "pytorchjob" else build_trainjob
    return builder(cfg, name=name, paths=job_paths(name, mount), pvc=pvc, mount=mount)


def render_training_job(cfg: KfkitConfig, kind: str, *, name: str | None = None, pvc: str = SHARED_PVC) -> str:
    """The job as YAML for ``kubectl apply -f -`` (e.g. behind a ``kfkit manifest`` style command).

    The pods expect ``<mount>/<name>/prepared/`` (prep's output) and ``<mount>/<name>/config.json`` on the
    claim ``pvc``; :func:`train_on_cluster` puts them there when the pipeline submits the job.
    """
    import yaml

    job = build_training_job(cfg, kind, name=name or job_name(cfg, "manual"), pvc=pvc)
    return yaml.safe_dump(job, sort_keys=False, default_flow_style=False, explicit_start=True)
