"""Prep on a cluster: build the SparkApplication (Spark Operator, sparkoperator.k8s.io/v1beta2), submit it, wait.

With ``data.engine=spark data.spark.master=k8s`` the prep step stages the config on the shared
ReadWriteMany claim (the one training jobs use, :data:`kfkit.training.jobs.SHARED_PVC`), submits a
SparkApplication whose driver runs :mod:`kfkit.data.spark_main` (the same :func:`prepare_spark` as a local
run, with executors from ``data.spark.*``), polls ``status.applicationState``, and copies the prepared
folder into its kfp output. A driver failure is reported as the PyTorchJob launcher reports a job's: the
operator's state and error message, and the driver pod's last log lines; a schema error the driver could
explain comes back as the same :class:`~kfkit.errors.DatasetError` a local run raises. Past
``data.spark.timeout_s`` the application is deleted.

The image (``data.spark.image``) must hold kfkit and a Spark runtime with Spark's container entrypoint
(``/opt/entrypoint.sh``, as the apache/spark images have), PySpark and Java 17.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit import k8s as kube
from kfkit.errors import ConfigError, DatasetError, PipelineError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig
    from kfkit.data.layout import PreparedData

__all__ = [
    "API",
    "MAIN_FILE",
    "ERROR_FILE",
    "SparkPaths",
    "spark_paths",
    "app_name",
    "build_spark_application",
    "render_spark_application",
    "submit_and_wait",
    "prepare_on_cluster",
]

API = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications", "SparkApplication")
MAIN_FILE = "local:///opt/venv/lib/python3.11/site-packages/kfkit/data/spark_main.py"
"""The driver's program inside the kfkit image (its virtual environment is /opt/venv)."""
ERROR_FILE = "prep-error.txt"
"""Written next to the output by a driver that failed on the user's data: the message to raise."""
_DONE, _FAILED = ("COMPLETED",), ("FAILED", "SUBMISSION_FAILED")
_MAX_NAME = 40  # the operator derives <name>-driver and <name>-<hash>-exec-<n> pod names (63 characters)
_DRIVER_LOG_LINES = 40


class SparkPaths:
    """Where one application reads its config and writes the prepared folder on the shared claim."""

    def __init__(self, name: str, mount: str) -> None:
        root = f"{mount.rstrip('/')}/{name}"
        self.config, self.out = f"{root}/config.json", f"{root}/prepared"
        self.root = root


def spark_paths(name: str, mount: str | None = None) -> SparkPaths:
    """The paths of application ``name`` under ``mount`` (the shared claim's mount by default)."""
    from kfkit.training.jobs import SHARED_MOUNT

    return SparkPaths(name, mount or SHARED_MOUNT)


def app_name(cfg: KfkitConfig, suffix: str | None = None) -> str:
    """A DNS-1123 name: ``<model>-prep-<suffix>`` (6 random hex digits by default)."""
    suffix = suffix or secrets.token_hex(3)
    stem = cfg.model.name[: _MAX_NAME - len(suffix) - len("-prep-")].rstrip("-")
    return f"{stem}-prep-{suffix}"


def _role(cfg: KfkitConfig, role: str, *, cores: int, memory: str, mount: str) -> dict[str, Any]:
    """The driver or executor section: resources, labels, restricted security, the two mounts."""
    return {
        "cores": cores,
        "coreLimit": str(cores),
        "memory": memory,
        "labels": kube.labels(name="kfkit", instance=cfg.model.name, component=f"data-prep-{role}"),
        "podSecurityContext": kube.pod_security_context(),
        "securityContext": kube.container_security_context(),
        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "volumeMounts": [{"name": "kfkit-shared", "mountPath": mount}, {"name": "tmp", "mountPath": "/tmp"}],
    }


def build_spark_application(
    cfg: KfkitConfig, *, name: str | None = None, pvc: str | None = None, mount: str | None = None
) -> dict[str, Any]:
    """The SparkApplication that runs prep for ``cfg`` on the cluster, as a plain dict.

    Driver and executors run as UID 1000 under the "restricted" Pod Security Standard with a read-only
    root filesystem (Spark spills to the /tmp emptyDir), mount the shared claim, and are never restarted
    by the operator (a rerun of the pipeline step resubmits).

    Raises:
        ConfigError: ``data.engine`` is not spark.
    """
    from kfkit.training.jobs import SHARED_MOUNT, SHARED_PVC

    if cfg.data.engine != "spark":
        raise ConfigError(f"data.engine={cfg.data.engine!r}: a SparkApplication runs data.engine=spark only")
    spark, mount = cfg.data.spark, mount or SHARED_MOUNT
    name = name or app_name(cfg)
    paths = spark_paths(name, mount)
    executor = _role(cfg, "executor", cores=spark.executor_cores, memory=spark.executor_memory, mount=mount)
    executor["instances"] = spark.executor_instances
    # Only the driver talks to the API server (it creates the executors); Spark's pod template says so.
    executor["template"] = {"spec": {"automountServiceAccountToken": False}}
    driver = _role(cfg, "driver", cores=spark.driver_cores, memory=spark.driver_memory, mount=mount)
    driver["serviceAccount"] = spark.service_account  # the driver creates and watches its executors
    spec: dict[str, Any] = {
        "type": "Python",
        "pythonVersion": "3",
        "mode": "cluster",
        "image": spark.image or cfg.images.main,
        "imagePullPolicy": "IfNotPresent",
        "mainApplicationFile": MAIN_FILE,
        "arguments": ["--config", paths.config, "--out", paths.out],
        "sparkVersion": spark.spark_version,
        "restartPolicy": {"type": "Never"},
        "timeToLiveSeconds": 86_400,
        "sparkConf": {
            "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
            "spark.local.dir": "/tmp/spark-local",
            "spark.ui.enabled": "false",
            **spark.conf,
        },
        "volumes": [
            {"name": "kfkit-shared", "persistentVolumeClaim": {"claimName": pvc or SHARED_PVC}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "driver": driver,
        "executor": executor,
    }
    if spark.dynamic_allocation:
        spec["dynamicAllocation"] = {
            "enabled": True,
            "initialExecutors": spark.executor_instances,
            "minExecutors": spark.min_executors,
            "maxExecutors": spark.max_executors,
            "shuffleTrackingEnabled": True,  # no external shuffle service on Kubernetes
        }
    namespace = spark.namespace or cfg.deploy.namespace
    metadata = {"name": name, "namespace": namespace,
                "labels": kube.labels(name="kfkit", instance=cfg.model.name, component="data-prep")}  # fmt: skip
    return {"apiVersion": f"{API[0]}/{API[1]}", "kind": API[3], "metadata": metadata, "spec": spec}


def render_spark_application(cfg: KfkitConfig, *, name: str | None = None) -> str:
    """The application as YAML for ``kubectl apply -f -``."""
    import yaml

    app = build_spark_application(cfg, name=name or app_name(cfg, "manual"))
    return yaml.safe_dump(app, sort_keys=False, default_flow_style=False, explicit_start=True)


def _driver_log(api_client: Any, namespace: str, obj: dict[str, Any]) -> str:
    """The driver pod's last log lines (best effort: an unreadable log must not hide the failure)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    pod = ((obj.get("status") or {}).get("driverInfo") or {}).get("podName") or f"{obj['metadata']['name']}-driver"
    try:
        log = client.CoreV1Api(api_client).read_namespaced_pod_log(pod, namespace, tail_lines=_DRIVER_LOG_LINES)
    except ApiException as e:
        log = f"(no log: {kube.api_message(e)})"
    return f"--- {pod} (last {_DRIVER_LOG_LINES} lines) ---\n{log.rstrip()}"


def submit_and_wait(
    app: dict[str, Any], timeout_s: float, *, api_client: Any = None, poll_s: float = 10.0
) -> dict[str, Any]:
    """Create ``app``, wait until its state is COMPLETED, and return its final object.

    Raises:
        ConfigError: no cluster is configured.
        PipelineError: it could not be created, FAILED or SUBMISSION_FAILED (with the operator's message
            and the driver's last log lines), or did not finish within ``timeout_s`` (it is then deleted).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    group, version, plural, kind = API
    namespace, name = app["metadata"]["namespace"], app["metadata"]["name"]
    api_client = api_client or kube.api_client(
        purpose="submit the SparkApplication to", otherwise="use data.spark.master='local[*]'"
    )
    api = client.CustomObjectsApi(api_client)
    where = f"{kind} {namespace}/{name}"
    kube.create_custom_object(
        api, app, group=group, version=version, plural=plural, error=PipelineError, what="the Spark Operator's CRD"
    )
    print(f"[prep] submitted {where}; waiting up to {timeout_s:g}s", flush=True)
    deadline, last_state, read_errors = time.monotonic() + timeout_s, "", 0
    while True:
        try:
            obj = api.get_namespaced_custom_object(group, version, namespace, plural, name)
            read_errors = 0
        except (ApiException, HTTPError) as e:
            read_errors += 1  # an API server restart must not fail an hour-long prep
            if read_errors >= 5:
                raise PipelineError(f"lost track of {where}: 5 status reads failed, last: {e}") from e
            obj = {}
        state_info = (obj.get("status") or {}).get("applicationState") or {}
        state = state_info.get("state") or ("SUBMITTING" if obj else last_state)
        if obj and state != last_state:
            print(f"[prep] {where}: {state}", flush=True)
            last_state = state
        if state in _DONE:
            return obj
        if state in _FAILED:
            raise PipelineError(
                f"{where} {state}: {state_info.get('errorMessage', '')}\n{_driver_log(api_client, namespace, obj)}\n"
                f"inspect it with `kubectl -n {namespace} describe {plural}.{group} {name}`"
            )
        if time.monotonic() >= deadline:
            try:
                api.delete_namespaced_custom_object(group, version, namespace, plural, name)
                outcome = "deleted it"
            except (ApiException, HTTPError) as e:
                outcome = f"could not delete it ({e}); delete it by hand"
            raise PipelineError(
                f"{where} did not finish within data.spark.timeout_s={timeout_s:g}s (last state "
                f"{last_state or 'unknown'}); {outcome}. Raise the timeout or add executors."
            )
        time.sleep(max(0.0, min(poll_s, deadline - time.monotonic())))


def prepare_on_cluster(
    cfg: KfkitConfig,
    out_dir: str | Path,
    *,
    mount: str | Path | None = None,
    pvc: str | None = None,
    submit: Callable[[dict[str, Any], float], Any] = submit_and_wait,
    name: str | None = None,
) -> PreparedData:
    """Stage the config on the shared claim, run the SparkApplication, and copy its output to ``out_dir``.

    ``dataset.path`` must be readable by the driver and executors (a path on the shared claim).

    Raises:
        ConfigError: the shared claim is not mounted here.
        DatasetError: the driver refused the data (the same message a local run gives).
        PipelineError: the application failed or timed out, or wrote no prepared folder.
    """
    from kfkit.config import to_dict
    from kfkit.data.layout import load_prepared
    from kfkit.training.jobs import SHARED_MOUNT, SHARED_PVC

    mount = str(mount or SHARED_MOUNT)
    if not Path(mount).is_dir():
        raise ConfigError(
            f"{mount} is not mounted: data.spark.master=k8s needs the shared ReadWriteMany claim "
            f"{pvc or SHARED_PVC!r} there (the driver and executors read and write through it)"
        )
    app = build_spark_application(cfg, name=name, pvc=pvc, mount=mount)
    name = app["metadata"]["name"]
    paths = spark_paths(name, mount)
    Path(paths.root).mkdir(parents=True, exist_ok=True)
    Path(paths.config).write_text(json.dumps(to_dict(cfg), indent=2))
    try:
        submit(app, float(cfg.data.spark.timeout_s))
    except PipelineError:
        error = Path(paths.root) / ERROR_FILE
        if error.is_file():  # the driver could say what was wrong with the data: say that
            raise DatasetError(error.read_text().strip()) from None
        raise
    if not (Path(paths.out) / "schema.json").is_file():
        raise PipelineError(f"SparkApplication {name} completed but wrote no {paths.out}/schema.json; see its driver")
    shutil.copytree(paths.out, out_dir, dirs_exist_ok=True)
    shutil.rmtree(paths.root, ignore_errors=True)  # only on success: a failure's files stay to inspect
    return load_prepared(out_dir)
