"""Train on a Kubernetes cluster: a Kubeflow PyTorchJob or TrainJob built from the config, submitted and awaited.

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
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit import k8s
from kfkit.errors import ConfigError, TrainingError

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
    "submit_and_wait",
    "train_on_cluster",
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
_APIS = {
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs", "PyTorchJob", "Succeeded"),
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob", "Complete"),
}
_POD_SELECTORS = {  # labels the operators put on a job's pods, to fetch their logs on failure
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
        f"--nnodes={cfg.training.cluster.num_nodes}", f"--nproc_per_node={cfg.training.nproc}",
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
    if cluster.gpus_per_node and cfg.training.nproc != cluster.gpus_per_node:
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


def _env(cfg: KfkitConfig) -> list[dict[str, str]]:
    # One BLAS thread per CPU worker process (as the local launcher does): N processes share the cores.
    threads = "1" if cfg.training.nproc > 1 and not cfg.training.cluster.gpus_per_node else ""
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
            "nprocPerNode": str(cfg.training.nproc),
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
                "numProcPerNode": cfg.training.nproc,
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


def _api_client() -> Any:
    """An ApiClient for the cluster this runs in (service account), else the kubeconfig's current context.

    Raises:
        ConfigError: neither is available; the message names both problems.
    """
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException as e:
        in_cluster = str(e)
    kubeconfig = os.environ.get("KUBECONFIG") or os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)
    try:
        return config.new_client_from_config()
    except (config.ConfigException, OSError, TypeError, ValueError) as e:
        raise ConfigError(
            f"no Kubernetes cluster to submit the training job to: not in a pod ({in_cluster}) and kubeconfig "
            f"{kubeconfig} is unusable ({e}); run the step in the cluster, point KUBECONFIG at a valid config, "
            "or use training.cluster.launcher=local"
        ) from e


def _api_error(error: Any) -> str:
    try:
        return json.loads(error.body).get("message") or error.reason
    except (TypeError, ValueError, AttributeError):
        return str(getattr(error, "reason", error))


def _condition(obj: dict[str, Any], types: tuple[str, ...]) -> dict[str, Any] | None:
    """The newest condition of one of ``types`` that is true."""
    conditions = (obj.get("status") or {}).get("conditions") or []
    active = [c for c in conditions if c.get("status") == "True" and c.get("type") in types]
    return active[-1] if active else None


def _pod_logs(api_client: Any, kind: str, namespace: str, name: str, lines: int = 40) -> str:
    """Last log lines of the job's pods (best effort: a log we cannot read must not hide the failure)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{_POD_SELECTORS[kind]}={name}").items
    except ApiException as e:
        return f"(could not list the job's pods: {_api_error(e)})"
    parts = []
    for pod in pods[:4]:
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=lines)
        except ApiException as e:
            log = f"(no log: {_api_error(e)})"
        parts.append(f"--- {pod.metadata.name} (last {lines} lines) ---\n{log.rstrip()}")
    return "\n".join(parts) or "(no pods found)"


def submit_and_wait(
    job: dict[str, Any], timeout_s: float, *, api_client: Any = None, poll_s: float = 10.0
) -> dict[str, Any]:
    """Create ``job`` (PyTorchJob or TrainJob), wait until it succeeds, and return its final object.

    Args:
        job: A manifest from :func:`build_training_job`.
        timeout_s: Seconds to wait; past it the job is deleted.
        api_client: A kubernetes ApiClient; None uses the in-cluster service account, else the kubeconfig.
        poll_s: Seconds between status reads.

    Raises:
        ConfigError: no cluster is configured, or the job's kind is not PyTorchJob/TrainJob.
        TrainingError: the job could not be created, failed (with its reason and the pods' last log
            lines), or did not finish within ``timeout_s`` (it is then deleted).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    kind = job.get("kind", "")
    apis = {api[3]: api for api in _APIS.values()}
    if kind not in apis:
        raise ConfigError(f"cannot submit kind {kind!r}: only {', '.join(apis)} are training jobs")
    group, version, plural, _, success = apis[kind]
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    api_client = api_client or _api_client()
    api = client.CustomObjectsApi(api_client)
    where = f"{kind} {namespace}/{name}"
    try:
        api.create_namespaced_custom_object(group, version, namespace, plural, job)
    except ApiException as e:
        hint = {
            404: f"is the {kind} CRD ({plural}.{group}) installed, and does namespace {namespace!r} exist?",
            403: f"grant the step's service account `create` on {plural}.{group} in {namespace!r}",
            409: "a job of that name exists already; delete it or let the step pick a new name",
        }.get(e.status, "see the API server's message")
        raise TrainingError(f"could not create {where}: {e.status} {_api_error(e)}; {hint}") from e
    except HTTPError as e:
        raise TrainingError(f"could not reach the Kubernetes API to create {where}: {e}") from e
    print(f"[train] submitted {where}; waiting up to {timeout_s:g}s", flush=True)
    deadline = time.monotonic() + timeout_s
    last_state, read_errors = "", 0
    while True:
        try:
            obj = api.get_namespaced_custom_object(group, version, namespace, plural, name)
            read_errors = 0
        except (ApiException, HTTPError) as e:
            read_errors += 1  # an API server restart must not fail a day-long training job
            if read_errors >= 5:
                raise TrainingError(f"lost track of {where}: 5 status reads failed, last: {e}") from e
            obj = {}
        if obj:
            conditions = (obj.get("status") or {}).get("conditions") or []
            state = next((c["type"] for c in reversed(conditions) if c.get("status") == "True"), "Pending")
            if state != last_state:
                print(f"[train] {where}: {state}", flush=True)
                last_state = state
            if _condition(obj, (success,)):
                return obj
            failed = _condition(obj, ("Failed",))
            if failed:
                logs = _pod_logs(api_client, kind, namespace, name)
                raise TrainingError(
                    f"{where} failed: {failed.get('reason', '')}: {failed.get('message', '')}\n{logs}\n"
                    f"inspect it with `kubectl -n {namespace} describe {plural}.{group} {name}`"
                )
        if time.monotonic() >= deadline:
            try:
                api.delete_namespaced_custom_object(
                    group, version, namespace, plural, name, propagation_policy="Background"
                )
                outcome = "deleted it"
            except (ApiException, HTTPError) as e:
                outcome = f"could not delete it ({e}); delete it by hand"
            raise TrainingError(
                f"{where} did not finish within training.cluster.job_timeout_s={timeout_s:g}s "
                f"(last state {last_state or 'unknown'}); {outcome}. Raise the timeout or train less."
            )
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))


def train_on_cluster(
    prepared_dir: str | Path,
    cfg: KfkitConfig,
    out_dir: str | Path,
    *,
    kind: str,
    mount: str | Path = SHARED_MOUNT,
    pvc: str = SHARED_PVC,
    submit: Callable[[dict[str, Any], float], Any] = submit_and_wait,
    name: str | None = None,
) -> dict:
    """Stage the data on the shared volume, run the job, and copy its model into ``out_dir``.

    Args:
        prepared_dir: prep's output folder.
        cfg: The run's config (``training.cluster.*`` shapes the job).
        out_dir: Where the model ends up (the kfp Model artifact's path).
        kind: ``pytorchjob`` or ``trainjob``.
        mount: Where the shared claim is mounted in this pod (and in the job's pods).
        pvc: The shared claim's name.
        submit: Creates the job and returns once it succeeded (:func:`submit_and_wait`).
        name: Job name; a fresh ``<model>-train-<hex>`` by default.

    Returns:
        The training summary the worker wrote (training.json).

    Raises:
        ConfigError: the shared volume is not mounted, or the config cannot run as a job.
        TrainingError: the job failed, timed out, or wrote no model.
    """
    from kfkit.config import to_dict
    from kfkit.training.worker import TRAINING_SUMMARY_FILE

    mount = str(mount)
    if not Path(mount).is_dir():
        raise ConfigError(
            f"{mount} is not mounted: launcher={kind} needs the shared ReadWriteMany claim {pvc!r} there "
            "(kfkit.pipelines.placement.apply_train_placement mounts it on the train step)"
        )
    job = build_training_job(cfg, kind, name=name, pvc=pvc, mount=mount)
    name = job["metadata"]["name"]
    paths = job_paths(name, mount)
    shutil.copytree(prepared_dir, paths.prepared)
    Path(paths.config).write_text(json.dumps(to_dict(cfg), indent=2))
    print(f"[train] staged data for {job['kind']} {name} at {Path(paths.prepared).parent}", flush=True)
    submit(job, float(cfg.training.cluster.job_timeout_s))
    summary_path = Path(paths.out) / TRAINING_SUMMARY_FILE
    if not summary_path.is_file():
        raise TrainingError(f"{job['kind']} {name} succeeded but wrote no {summary_path}; see its pods' logs")
    summary = json.loads(summary_path.read_text())
    shutil.copytree(paths.out, out_dir, dirs_exist_ok=True)
    shutil.rmtree(Path(paths.prepared).parent, ignore_errors=True)  # only on success: failures stay to inspect
    return summary
