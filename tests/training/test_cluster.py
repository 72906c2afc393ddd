"""PyTorchJob/TrainJob builders (checked against the real CRDs), submit-and-wait, staging on the shared volume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from kfkit.config import KfkitConfig, compose, from_dict, to_dict
from kfkit.errors import ConfigError, TrainingError
from kfkit.training.cluster import submit_and_wait, train_on_cluster
from kfkit.training.jobs import SHARED_MOUNT, build_training_job, job_name, job_paths, render_training_job

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO.parent / "shared" / "crds"  # CI clones the repo with shared/ beside it
GPU_POOL = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "pool": "train"}
GPU_TAINT = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "dedicated", "operator": "Equal", "value": "training", "effect": "NoExecute"},
]


def with_cluster(cfg: KfkitConfig, nproc: int | None = None, **cluster: Any) -> KfkitConfig:
    """A config with training.cluster.* (and training.nproc) changed, re-validated as a component would."""
    data = to_dict(cfg)
    data["training"]["cluster"].update(cluster)
    if nproc is not None:
        data["training"]["nproc"] = nproc
    return from_dict(data)


@pytest.fixture(scope="module")
def base() -> KfkitConfig:
    return compose([])


@pytest.fixture(scope="module")
def prepared(base, tmp_path_factory) -> Path:
    """Breast cancer splits, as prep writes them."""
    from kfkit.data.prep import prepare

    out = tmp_path_factory.mktemp("cluster") / "prepared"
    prepare(base.dataset, out)
    return out


@pytest.fixture(scope="module")
def configs(base) -> dict[str, KfkitConfig]:
    """CPU single node, one GPU node with placement, and a 4-node x 8-GPU job."""
    return {
        "cpu": with_cluster(base, nproc=2, launcher="pytorchjob"),
        "gpu": with_cluster(
            base, nproc=1, launcher="pytorchjob", gpus_per_node=1, node_selector=GPU_POOL, tolerations=GPU_TAINT
        ),
        "multinode": with_cluster(
            base,
            nproc=8,
            launcher="trainjob",
            num_nodes=4,
            gpus_per_node=8,
            image="registry.example.com/ml/kfkit:1.2.3",
            namespace="team-fraud",
            shm_size="16Gi",
            runtime_ref="torch-distributed-h100",
            tolerations=GPU_TAINT[:1],
        ),
    }


def validate(docs: list[dict]) -> subprocess.CompletedProcess:
    """Run shared/crds/validate.py on the documents; skip when shared/ is not beside the repo."""
    if not (CRDS / "validate.py").is_file():
        pytest.skip(f"missing tool: CRD schemas not found at {CRDS} (shared/ must be cloned beside the repository)")
    return subprocess.run(
        [sys.executable, str(CRDS / "validate.py"), "--crds", str(CRDS), "-"],
        input=yaml.safe_dump_all(docs, sort_keys=False),
        capture_output=True,
        text=True,
        timeout=120,
    )


def container_of(job: dict) -> dict:
    if job["kind"] == "PyTorchJob":
        return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    return job["spec"]["trainer"]


def pod_spec_of(job: dict) -> dict:
    if job["kind"] == "PyTorchJob":
        return job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    patch = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    return patch["template"]["spec"]["template"]["spec"]


def test_import_loads_no_heavy_library():
    code = (
        "import sys, kfkit.training.cluster, kfkit.training.jobs; "
        "print(sorted({'torch', 'tensorflow', 'kubernetes'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_jobs_validate_against_the_crds(configs):
    docs = [build_training_job(cfg, kind, name=f"{key}-{kind}") for key, cfg in configs.items() for kind in
            ("pytorchjob", "trainjob")]  # fmt: skip
    result = validate(docs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout
    assert result.stdout.count("OK ") == 6, result.stdout
    assert result.stdout.count("PyTorchJob/") == 3 and result.stdout.count("TrainJob/") == 3


def test_validator_rejects_a_misspelt_field(configs):
    """The CRD check above can fail: an unknown field in the pod template is an error."""
    job = build_training_job(configs["gpu"], "pytorchjob", name="typo")
    pod = pod_spec_of(job)
    pod["nodeSelectors"] = pod.pop("nodeSelector")
    trainjob = build_training_job(configs["gpu"], "trainjob", name="typo2")
    trainjob["spec"]["trainer"]["numProcsPerNode"] = trainjob["spec"]["trainer"].pop("numProcPerNode")
    result = validate([job, trainjob])
    assert result.returncode == 1
    assert 'unknown field "nodeSelectors"' in result.stdout
    assert 'unknown field "numProcsPerNode"' in result.stdout


def test_cpu_pytorchjob(configs, base):
    job = build_training_job(configs["cpu"], "pytorchjob", name="bc-train-1")
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    assert job["metadata"]["namespace"] == base.deploy.namespace
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    assert job["metadata"]["labels"]["app.kubernetes.io/instance"] == "breast-cancer-mlp"
    assert set(job["spec"]["pytorchReplicaSpecs"]) == {"Master"}  # one node: no Worker replicas
    assert job["spec"]["nprocPerNode"] == "2"
    assert job["spec"]["runPolicy"]["activeDeadlineSeconds"] == base.training.cluster.job_timeout_s
    container = container_of(job)
    assert container["name"] == "pytorch" and container["image"] == base.deploy.image
    paths = job_paths("bc-train-1")
    assert container["command"] == [
        "python", "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "-m", "kfkit.training.worker",
        "--prepared", paths.prepared, "--config", paths.config, "--out", paths.out,
    ]  # fmt: skip
    assert paths.out == f"{SHARED_MOUNT}/bc-train-1/model"
    assert container["resources"] == {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"cpu": "2", "memory": "8Gi"},
    }
    assert {"name": "OMP_NUM_THREADS", "value": "1"} in container["env"]
    pod = pod_spec_of(job)
    assert "nodeSelector" not in pod and "tolerations" not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert volumes["kfkit-shared"]["persistentVolumeClaim"] == {"claimName": "kfkit-training"}
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/dev/shm", SHARED_MOUNT, "/tmp"}


def test_gpu_job_has_gpus_node_selector_and_tolerations(configs):
    for kind in ("pytorchjob", "trainjob"):
        job = build_training_job(configs["gpu"], kind)
        resources = container_of(job)["resources" if kind == "pytorchjob" else "resourcesPerNode"]
        assert resources["limits"]["nvidia.com/gpu"] == 1
        assert resources["requests"]["nvidia.com/gpu"] == 1
        pod = pod_spec_of(job)
        assert pod["nodeSelector"] == GPU_POOL
        assert pod["tolerations"] == GPU_TAINT
        assert not any(e["name"] == "OMP_NUM_THREADS" for e in container_of(job)["env"])


def test_multinode_trainjob(configs):
    job = build_training_job(configs["multinode"], "trainjob", name="fraud-train-7")
    assert (job["apiVersion"], job["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    assert job["metadata"]["namespace"] == "team-fraud"
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
        "name": "torch-distributed-h100",
    }
    trainer = job["spec"]["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (4, 8)
    assert trainer["image"] == "registry.example.com/ml/kfkit:1.2.3"
    assert "--nnodes=4" in trainer["command"] and "--nproc_per_node=8" in trainer["command"]
    pod = pod_spec_of(job)
    (node,) = pod["containers"]
    assert node["name"] == "node"
    assert node["volumeMounts"] == [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "kfkit-shared", "mountPath": SHARED_MOUNT},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    assert node["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["volumes"][0]["emptyDir"]["sizeLimit"] == "16Gi"
    pytorchjob = build_training_job(configs["multinode"], "pytorchjob")
    assert pytorchjob["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 3
    assert pytorchjob["spec"]["nprocPerNode"] == "8"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"nproc": 2, "gpus_per_node": 4}, r"training.nproc=2 but training.cluster.gpus_per_node=4"),
        ({"tolerations": [{"key": "gpu", "operatr": "Exists"}]}, r"unknown keys \['operatr'\]"),
    ],
)
def test_bad_cluster_configs_are_config_errors(base, changes, match):
    nproc = changes.pop("nproc", None)
    with pytest.raises(ConfigError, match=match):
        build_training_job(with_cluster(base, nproc=nproc, launcher="pytorchjob", **changes), "pytorchjob")


def test_tensorflow_and_unknown_kind_are_refused(base):
    with pytest.raises(ConfigError, match="model.framework='tensorflow'"):
        build_training_job(compose(["model.framework=tensorflow"]), "trainjob")
    with pytest.raises(ConfigError, match="'mpijob' is not one of pytorchjob, trainjob"):
        build_training_job(base, "mpijob")


def test_job_names_are_dns_labels(base):
    long = with_cluster(base)
    long.model.name = "a" * 63
    name = job_name(long)
    assert len(name) <= 48 and name.startswith("a") and "-train-" in name
    assert job_name(base, "abc123") == "breast-cancer-mlp-train-abc123"
    assert job_name(base) != job_name(base)


def test_render_is_the_built_job_as_yaml(configs):
    text = render_training_job(configs["gpu"], "trainjob", name="x-train-1")
    assert text.startswith("---\n")
    assert yaml.safe_load(text) == build_training_job(configs["gpu"], "trainjob", name="x-train-1")


def test_no_cluster_is_a_clear_error(monkeypatch, tmp_path, base):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    job = build_training_job(with_cluster(base, launcher="pytorchjob"), "pytorchjob")
    with pytest.raises(ConfigError) as info:
        submit_and_wait(job, 5)
    message = str(info.value)
    assert "not in a pod" in message
    assert str(tmp_path / "missing-kubeconfig") in message
    assert "KUBECONFIG" in message


class FakeApiServer:
    """A few routes of the Kubernetes API: create/get/delete one custom object, list pods, read a log.

    It stands in for a cluster (none exists here) so the real kubernetes client is exercised over HTTP.
    ``states`` lists the condition types GET reports, one per read; the last one repeats.
    """

    def __init__(self, states: list[str], create_status: int = 201) -> None:
        self.states, self.create_status = states, create_status
        self.requests: list[tuple[str, str]] = []
        self.created: dict | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(("POST", self.path))
                length = int(self.headers["Content-Length"])
                server.created = json.loads(self.rfile.read(length))
                if server.create_status != 201:
                    self._send(server.create_status, {"kind": "Status", "message": "pytorchjobs is forbidden"})
                    return
                self._send(201, server.created)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(("GET", self.path))
                if self.path.startswith("/api/v1/namespaces/kfkit/pods/") and self.path.split("?")[0].endswith("/log"):
                    self._send(200, "Traceback ...\nValueError: boom\n", "text/plain")
                elif self.path.startswith("/api/v1/namespaces/kfkit/pods"):
                    pod = {"metadata": {"name": "job-master-0", "namespace": "kfkit"}}
                    self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod]})
                else:
                    reads = sum(1 for method, path in server.requests if method == "GET" and "/pods" not in path)
                    state = server.states[min(reads, len(server.states)) - 1]
                    condition = {"type": state, "status": "True", "reason": f"Job{state}", "message": f"job is {state}"}
                    self._send(200, {**server.created, "status": {"conditions": [condition]}})

            def do_DELETE(self) -> None:  # noqa: N802 (http.server's name)
                server.requests.append(("DELETE", self.path))
                self._send(200, {"kind": "Status", "status": "Success"})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        return client.ApiClient(configuration)

    def __enter__(self) -> FakeApiServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_submit_waits_for_success(base, capsys):
    job = build_training_job(with_cluster(base, launcher="pytorchjob"), "pytorchjob", name="job")
    with FakeApiServer(["Created", "Running", "Running", "Succeeded"]) as api:
        final = submit_and_wait(job, 30, api_client=api.client(), poll_s=0.01)
    assert api.requests[0] == ("POST", "/apis/kubeflow.org/v1/namespaces/kfkit/pytorchjobs")
    assert api.created == job
    assert final["status"]["conditions"][-1]["type"] == "Succeeded"
    assert [m for m, _ in api.requests].count("GET") == 4
    out = capsys.readouterr().out
    assert "PyTorchJob kfkit/job: Running" in out and "PyTorchJob kfkit/job: Succeeded" in out


def test_trainjob_completes_on_complete(base):
    job = build_training_job(with_cluster(base, launcher="trainjob"), "trainjob", name="job")
    with FakeApiServer(["Created", "Complete"]) as api:
        submit_and_wait(job, 30, api_client=api.client(), poll_s=0.01)
    assert api.requests[0] == ("POST", "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kfkit/trainjobs")


def test_failed_job_reports_reason_and_logs(base):
    job = build_training_job(with_cluster(base, launcher="pytorchjob"), "pytorchjob", name="job")
    with FakeApiServer(["Running", "Failed"]) as api, pytest.raises(TrainingError) as info:
        submit_and_wait(job, 30, api_client=api.client(), poll_s=0.01)
    message = str(info.value)
    assert "PyTorchJob kfkit/job failed: JobFailed: job is Failed" in message
    assert "job-master-0" in message and "ValueError: boom" in message
    assert ("GET", "/api/v1/namespaces/kfkit/pods?labelSelector=training.kubeflow.org%2Fjob-name%3Djob") in api.requests


def test_timeout_deletes_the_job(base):
    job = build_training_job(with_cluster(base, launcher="trainjob"), "trainjob", name="job")
    with FakeApiServer(["Running"]) as api, pytest.raises(TrainingError, match="did not finish within .*deleted it"):
        submit_and_wait(job, 0.3, api_client=api.client(), poll_s=0.05)
    assert api.requests[-1] == (
        "DELETE",
        "/apis/trainer.kubeflow.org/v1alpha1/namespaces/kfkit/trainjobs/job?propagationPolicy=Background",
    )


def test_forbidden_create_names_the_rbac_fix(base):
    job = build_training_job(with_cluster(base, launcher="pytorchjob"), "pytorchjob", name="job")
    with FakeApiServer(["Running"], create_status=403) as api, pytest.raises(TrainingError) as info:
        submit_and_wait(job, 30, api_client=api.client(), poll_s=0.01)
    assert "403 pytorchjobs is forbidden" in str(info.value)
    assert "grant the step's service account `create` on pytorchjobs.kubeflow.org" in str(info.value)


def test_missing_shared_volume_is_a_config_error(tmp_path, base):
    cfg = with_cluster(base, launcher="pytorchjob")
    with pytest.raises(ConfigError, match="needs the shared ReadWriteMany claim 'kfkit-training'"):
        train_on_cluster(tmp_path, cfg, tmp_path / "model", kind="pytorchjob", mount=tmp_path / "not-mounted")


def run_pods_here(job: dict, _timeout_s: float, *, master_port: int) -> None:
    """Stand-in for the cluster: run the job's container command once per node, with the PET_* variables
    the operator injects (rank 0 as master), on this machine; fail like the job would."""
    container = container_of(job)
    nodes = job["spec"]["trainer"]["numNodes"] if job["kind"] == "TrainJob" else 1 + sum(
        spec["replicas"] for role, spec in job["spec"]["pytorchReplicaSpecs"].items() if role == "Worker"
    )  # fmt: skip
    command = [sys.executable if part == "python" else part for part in container["command"]]
    pods = []
    for rank in range(nodes):
        env = {**os.environ, **{e["name"]: e["value"] for e in container["env"]}}
        env.update(PET_NNODES=str(nodes), PET_NODE_RANK=str(rank), PET_MASTER_ADDR="127.0.0.1",
                   PET_MASTER_PORT=str(master_port))  # fmt: skip
        pods.append(subprocess.Popen(command, env=env))
    codes = [pod.wait(timeout=300) for pod in pods]
    if any(codes):
        raise TrainingError(f"pods exited with {codes}")


@pytest.mark.slow
def test_two_node_job_trains_through_the_shared_volume(tmp_path, free_port, prepared):
    """The job's real command, on 2 'nodes' x 1 process here: data in, model out through the mount."""
    cfg = with_cluster(compose(["training.epochs=3"]), nproc=1, launcher="trainjob", num_nodes=2)
    mount = tmp_path / "pvc"
    mount.mkdir()
    port = free_port()
    summary = train_on_cluster(
        prepared,
        cfg,
        tmp_path / "model",
        kind="trainjob",
        mount=mount,
        name="bc-train-test",
        submit=lambda job, timeout: run_pods_here(job, timeout, master_port=port),
    )
    assert summary["world_size"] == 2
    assert len(summary["history"]) == 3
    assert {"model.json", "training.json"} <= {p.name for p in (tmp_path / "model").iterdir()}
    assert not (mount / "bc-train-test").exists()  # staged data removed after success


def test_failed_job_keeps_staged_files(tmp_path, prepared, base):
    cfg = with_cluster(base, launcher="pytorchjob")
    mount = tmp_path / "pvc"
    mount.mkdir()

    def fail(job: dict, timeout: float) -> None:
        raise TrainingError(f"{job['metadata']['name']} failed")

    with pytest.raises(TrainingError, match="bc-train-x failed"):
        train_on_cluster(prepared, cfg, tmp_path / "m", kind="pytorchjob", mount=mount,
                         name="bc-train-x", submit=fail)  # fmt: skip
    staged = mount / "bc-train-x"
    assert (staged / "prepared" / "train.parquet").is_file()
    assert json.loads((staged / "config.json").read_text())["training"]["cluster"]["launcher"] == "pytorchjob"


def test_job_that_writes_no_model_is_a_training_error(tmp_path, prepared, base):
    mount = tmp_path / "pvc"
    mount.mkdir()
    with pytest.raises(TrainingError, match="succeeded but wrote no"):
        train_on_cluster(prepared, with_cluster(base, launcher="trainjob"), tmp_path / "m",
                         kind="trainjob", mount=mount, submit=lambda job, timeout: None)  # fmt: skip


def test_train_component_hands_job_launchers_to_the_cluster(tmp_path, base):
    from kfp.dsl import Dataset, Metrics, Model

    from kfkit.components.train import train

    config = to_dict(with_cluster(base, launcher="trainjob"))
    with pytest.raises(ConfigError, match=f"{SHARED_MOUNT} is not mounted: launcher=trainjob"):
        train.python_func(
            config=config,
            prepared=Dataset(uri=str(tmp_path / "prepared")),
            model=Model(uri=str(tmp_path / "model")),
            training_metrics=Metrics(uri=str(tmp_path / "metrics")),
        )
