"""Train on a Kubernetes cluster: submit the job :mod:`kfkit.training.jobs` builds, wait for it, report its failure.

The train step stages the prepared splits and config on the shared claim, submits the PyTorchJob or
TrainJob with CustomObjectsApi, polls its Succeeded/Failed (Complete) condition, and on failure names the
operator's reason and quotes the pods' last log lines; on timeout it deletes the job.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit import k8s as kube
from kfkit.errors import ConfigError, TrainingError
from kfkit.training.jobs import JOB_APIS, POD_SELECTORS, SHARED_MOUNT, SHARED_PVC, build_training_job, job_paths

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["submit_and_wait", "train_on_cluster"]


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
        pods = core.list_namespaced_pod(namespace, label_selector=f"{POD_SELECTORS[kind]}={name}").items
    except ApiException as e:
        return f"(could not list the job's pods: {kube.api_message(e)})"
    parts = []
    for pod in pods[:4]:
        try:
            log = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=lines)
        except ApiException as e:
            log = f"(no log: {kube.api_message(e)})"
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
    apis = {api[3]: api for api in JOB_APIS.values()}
    if kind not in apis:
        raise ConfigError(f"cannot submit kind {kind!r}: only {', '.join(apis)} are training jobs")
    group, version, plural, _, success = apis[kind]
    namespace, name = job["metadata"]["namespace"], job["metadata"]["name"]
    api_client = api_client or kube.api_client(
        purpose="submit the training job to",
        otherwise="run the step in the cluster, or use training.cluster.launcher=local",
    )
    api = client.CustomObjectsApi(api_client)
    where = f"{kind} {namespace}/{name}"
    kube.create_custom_object(
        api, job, group=group, version=version, plural=plural, error=TrainingError, what=f"the {kind} CRD"
    )
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
    from kfkit.training.outputs import TRAINING_SUMMARY_FILE

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
