"""The Helm chart and the kustomize base, checked with real helm and kubectl against the KServe CRD schemas."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from kfkit.config import compose
from kfkit.deploy.inference_service import build_inference_service, build_serving_runtime
from kfkit.training.jobs import JOB_KINDS, SHARED_PVC, build_training_job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "kfkit"
CRDS = REPO.parent / "shared" / "crds"  # CI clones the repo with shared/ beside it
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
EXPECTED_KINDS = {
    "default-values.yaml": ["ServiceAccount", "ServingRuntime"],
    "with-isvc-values.yaml": ["InferenceService", "Pod", "ServiceAccount", "ServingRuntime"],
    "scale-to-zero-values.yaml": ["InferenceService", "ServiceAccount", "ServingRuntime"],  # grpc-v2: no REST test
    "training-values.yaml": ["PersistentVolumeClaim", "Role", "RoleBinding", "ServiceAccount", "ServingRuntime"],
}
TRAINING_KINDS = {"PersistentVolumeClaim", "Role", "RoleBinding"}


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """helm and kubectl from scripts/install_k8s_tools.sh (a no-op once installed); skip if it cannot run."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_k8s_tools.sh")], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        output = (result.stderr or result.stdout)[-500:]
        pytest.skip(f"missing tool: scripts/install_k8s_tools.sh failed, no helm/kubectl: {output}")
    bin_dir = Path(os.environ.get("KFKIT_TOOLS_DIR") or REPO / ".tools") / "bin"  # as the script decides
    return {"helm": bin_dir / "helm", "kubectl": bin_dir / "kubectl"}


@pytest.fixture(scope="session")
def crds() -> Path:
    if not (CRDS / "validate.py").is_file():
        pytest.skip(f"missing tool: CRD schemas not found at {CRDS} (shared/ must be cloned beside the repository)")
    return CRDS


def run(*cmd: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, text=True, timeout=120)


def helm_template(tools: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    return run(tools["helm"], "template", "kfkit", CHART, "--namespace", "kfkit", *args)


def render(tools: dict[str, Path], *args: str) -> list[dict]:
    result = helm_template(tools, *args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def validate(crds: Path, text: str) -> subprocess.CompletedProcess:
    return run(sys.executable, crds / "validate.py", "--crds", crds, "-", stdin=text)


def only(docs: list[dict], kind: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind]
    return doc


def test_every_scenario_has_expected_kinds():
    assert SCENARIOS == sorted(EXPECTED_KINDS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict(tools, scenario):
    result = run(tools["helm"], "lint", CHART, "--strict", "-f", CHART / "ci" / scenario)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_template_validates_against_crds(tools, crds, scenario):
    result = helm_template(tools, "-f", str(CHART / "ci" / scenario))
    assert result.returncode == 0, result.stderr
    checked = validate(crds, result.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "error" not in checked.stdout.lower()
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == EXPECTED_KINDS[scenario]
    assert checked.stdout.count("OK ") == sum(d["kind"] in ("InferenceService", "ServingRuntime") for d in docs)


def test_scenario_settings_reach_the_inference_service(tools):
    isvc = only(render(tools, "-f", str(CHART / "ci" / "with-isvc-values.yaml")), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["containerConcurrency"]) == (1, 5, 8)
    assert isvc["metadata"]["annotations"]["autoscaling.knative.dev/metric"] == "rps"
    assert isvc["metadata"]["labels"]["app.kubernetes.io/version"] == "3"

    zero = only(render(tools, "-f", str(CHART / "ci" / "scale-to-zero-values.yaml")), "InferenceService")
    assert zero["spec"]["predictor"]["minReplicas"] == 0
    assert zero["metadata"]["annotations"]["autoscaling.knative.dev/class"] == "kpa.autoscaling.knative.dev"
    assert zero["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--set", "inferenceService.minReplica=0"], "additional properties 'minReplica' not allowed"),
        (["--set", "inferenceService.minReplicas=one"], "/inferenceService/minReplicas"),
        (["--set", "servingRuntime.httpPort=true"], "/servingRuntime/httpPort"),
        (["--set", "servingRuntime.batching.maxBatchSize=0"], "/servingRuntime/batching/maxBatchSize"),
        (
            ["--set-json", "servingRuntime.batching.maxBatchLatencyMs=-0.5"],
            "/servingRuntime/batching/maxBatchLatencyMs",
        ),
        (["--set", "servingRuntime.batching.maxBatchLatencyMs=0.5"], "got string, want number"),  # --set-json takes it
        (["--set", "servingRuntime.batching.maxBatchSise=4"], "additional properties 'maxBatchSise' not allowed"),
        (["--set", "servingRuntime.maxBodyBytes=3000000000"], "/servingRuntime/maxBodyBytes"),  # gRPC's int32
        (["--set", "inferenceService.storageUri=file:///tmp/m/1"], "/inferenceService/storageUri"),
        (["--set", "inferenceService.autoscaling.metric=cpu", "--set", "inferenceService.minReplicas=0"], "minimum"),
        (["--set", "imagee.tag=1"], "additional properties 'imagee' not allowed"),
        (["--set", "training.pvc.size=12"], "at '/training/pvc/size': got number, want string"),
        (["--set-string", "training.pvc.size=12"], "/training/pvc/size"),  # 12 bytes: a unit is required
        (["--set", "training.pvc.sise=20Gi"], "additional properties 'sise' not allowed"),
        (["--set", "training.pvc.accessModes={ReadOnlyMany}"], "/training/pvc/accessModes/0"),
        (["--set", "training.pvc.storageClassName=EFS_SC"], "/training/pvc/storageClassName"),
        (["--set", "training.rbac.subjects[0].kind=Sa"], "/training/rbac/subjects/0/kind"),
        (["--set", "training.rbac.role=admin"], "additional properties 'role' not allowed"),
        (["--set", "training.enabled=yes"], "/training/enabled"),
    ],
)
def test_invalid_values_are_rejected_by_the_schema(tools, args, complaint):
    result = helm_template(tools, *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


def test_replica_bounds_are_checked(tools):
    result = helm_template(
        tools, "--set", "inferenceService.storageUri=s3://b/m/1", "--set", "inferenceService.minReplicas=4"
    )
    assert result.returncode != 0
    assert "maxReplicas=3 is below inferenceService.minReplicas=4" in result.stderr


def test_chart_runtime_matches_the_builder(tools):
    cfg = compose(["deploy=kserve"])
    chart = only(render(tools), "ServingRuntime")
    built = build_serving_runtime(cfg)
    assert chart["spec"] == built["spec"]
    assert chart["metadata"]["name"] == built["metadata"]["name"]
    for key in ("name", "component", "part-of", "version"):
        label = f"app.kubernetes.io/{key}"
        assert chart["metadata"]["labels"][label] == built["metadata"]["labels"][label], label


def test_chart_serving_settings_match_the_builder(tools):
    """Non-default batching and body limit, set through the chart and through the config, give one runtime."""
    serving = ["serving.max_batch_size=64", "serving.max_batch_latency_ms=0.5", "serving.max_body_bytes=16777216"]
    cfg = compose(["deploy=kserve", *serving])
    sets = ["--set", "servingRuntime.batching.maxBatchSize=64", "--set", "servingRuntime.maxBodyBytes=16777216"]
    chart = only(render(tools, *sets, "--set-json", "servingRuntime.batching.maxBatchLatencyMs=0.5"), "ServingRuntime")
    assert chart["spec"] == build_serving_runtime(cfg)["spec"]
    args = chart["spec"]["containers"][0]["args"]
    assert args[-3:] == ["--max-batch-size=64", "--max-batch-latency-ms=0.5", "--max-body-bytes=16777216"]


@pytest.mark.parametrize(
    ("deploy", "sets"),
    [
        ({}, []),
        (
            {"protocol_version": "grpc-v2", "min_replicas": 0, "max_replicas": 2, "autoscaling_target": 5},
            [
                "inferenceService.protocolVersion=grpc-v2",
                "inferenceService.minReplicas=0",
                "inferenceService.maxReplicas=2",
                "inferenceService.autoscaling.target=5",
            ],
        ),
        (
            {"autoscaling_metric": "cpu", "autoscaling_target": 70, "container_concurrency": 4, "cpu_limit": "2"},
            [
                "inferenceService.autoscaling.metric=cpu",
                "inferenceService.autoscaling.target=70",
                "inferenceService.containerConcurrency=4",
                "servingRuntime.resources.limits.cpu=2",
            ],
        ),
    ],
)
def test_chart_inference_service_matches_the_builder(tools, deploy, sets):
    cfg = compose(["deploy=kserve"])
    cfg = dataclasses.replace(cfg, deploy=dataclasses.replace(cfg.deploy, **deploy))
    uri = "s3://kfkit-models/breast-cancer-mlp/4"
    args = ["--set", f"inferenceService.storageUri={uri}", "--set", "inferenceService.name=breast-cancer-mlp"]
    for item in sets:  # quantities stay strings, as the builder writes them
        args += ["--set-string" if item.startswith("servingRuntime.resources") else "--set", item]
    chart = only(render(tools, *args), "InferenceService")
    built = build_inference_service(cfg, storage_uri=uri)
    assert chart["spec"] == built["spec"]
    assert chart["metadata"]["annotations"] == built["metadata"]["annotations"]
    for key in ("name", "component", "part-of", "version"):  # instance: Helm's is the release, the builder's the model
        label = f"app.kubernetes.io/{key}"
        assert chart["metadata"]["labels"][label] == built["metadata"]["labels"][label], label


def test_notes_show_v1_and_v2_calls(tools):
    result = run(
        tools["helm"],
        "install",
        "kfkit",
        CHART,
        "--namespace",
        "kfkit",
        "--dry-run=client",
        "--set",
        "inferenceService.storageUri=s3://kfkit-models/fraud-mlp/3",
        "--set",
        "inferenceService.name=fraud-mlp",
    )
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "/v1/models/fraud-mlp:predict" in notes
    assert "/v2/models/fraud-mlp/infer" in notes
    assert "helm test kfkit" in notes


def test_kustomize_base_validates_against_crds(tools, crds):
    result = run(tools["kubectl"], "kustomize", REPO / "manifests" / "base")
    assert result.returncode == 0, result.stderr
    checked = validate(crds, result.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "error" not in checked.stdout.lower()
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert sorted(d["kind"] for d in docs) == ["InferenceService", "ServiceAccount", "ServingRuntime"]
    assert {d["metadata"]["namespace"] for d in docs} == {"kfkit"}


def test_chart_and_base_share_the_runtime_spec(tools):
    base = yaml.safe_load((REPO / "manifests" / "base" / "servingruntime.yaml").read_text())
    assert only(render(tools), "ServingRuntime")["spec"] == base["spec"]


def typed(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` read into the kubernetes SDK's model of its kind and written back: unknown or misspelt fields
    are dropped, so a round trip that changes the document means the API server would not take it as is."""
    from kubernetes.client import ApiClient

    api = ApiClient()
    model = api.deserialize(SimpleNamespace(data=json.dumps(doc)), f"V1{doc['kind']}")
    return api.sanitize_for_serialization(model)


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) a Role's rules grant."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def claim_names(obj: Any) -> set[str]:
    """Every persistentVolumeClaim.claimName anywhere in a manifest."""
    if isinstance(obj, dict):
        found = {obj["claimName"]} if isinstance(obj.get("claimName"), str) else set()
        return found.union(*(claim_names(v) for v in obj.values()))
    if isinstance(obj, list):
        return set().union(*(claim_names(v) for v in obj))
    return set()


def test_training_is_off_by_default(tools):
    assert not TRAINING_KINDS & {d["kind"] for d in render(tools)}
    both_off = ["--set", "training.enabled=true", "--set", "training.pvc.create=false"]
    both_off += ["--set", "training.rbac.create=false"]
    assert not TRAINING_KINDS & {d["kind"] for d in render(tools, *both_off)}


def test_training_scenario_renders_the_claim_the_jobs_mount(tools):
    docs = render(tools, "-f", str(CHART / "ci" / "training-values.yaml"))
    pvc = only(docs, "PersistentVolumeClaim")
    assert typed(pvc) == pvc
    assert pvc["metadata"]["name"] == SHARED_PVC == "kfkit-training"
    assert pvc["metadata"]["namespace"] == "kfkit"
    assert pvc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    labels = pvc["metadata"]["labels"]
    assert (labels["app.kubernetes.io/component"], labels["app.kubernetes.io/instance"]) == ("training", "kfkit")
    assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "storageClassName": "efs-sc",
        "resources": {"requests": {"storage": "50Gi"}},
    }
    cfg = compose(["training=pytorchjob"])
    for kind in JOB_KINDS:  # the jobs kfkit submits mount exactly this claim
        assert claim_names(build_training_job(cfg, kind, name="x")) == {pvc["metadata"]["name"]}, kind


def test_training_role_grants_what_the_train_step_calls(tools):
    docs = render(tools, "-f", str(CHART / "ci" / "training-values.yaml"))
    role, binding = only(docs, "Role"), only(docs, "RoleBinding")
    assert typed(role) == role
    assert typed(binding) == binding
    cfg = compose(["training=pytorchjob"])
    wanted = {("", "pods", verb) for verb in ("get", "list", "watch")} | {("", "pods/log", "get")}
    for kind in JOB_KINDS:  # group and plural of the objects kfkit.training.cluster creates, polls and deletes
        job = build_training_job(cfg, kind, name="x")
        group, plural = job["apiVersion"].rpartition("/")[0], job["kind"].lower() + "s"
        wanted |= {(group, plural, verb) for verb in ("create", "get", "list", "watch", "delete")}
    assert grants(role) == wanted  # all it needs, and nothing more
    assert {("kubeflow.org", "pytorchjobs"), ("trainer.kubeflow.org", "trainjobs")} <= {g[:2] for g in wanted}
    assert role["metadata"]["name"] == "kfkit-training"
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "kfkit-training"}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default-editor", "namespace": "kfkit"},
        {"kind": "Group", "name": "ml-engineers", "apiGroup": "rbac.authorization.k8s.io"},
    ]
    for doc in (role, binding):
        assert doc["metadata"]["labels"]["app.kubernetes.io/component"] == "training"


def test_training_defaults_bind_pipeline_runner_and_use_the_default_class(tools):
    docs = render(tools, "--namespace", "team-a", "--set", "training.enabled=true")
    assert only(docs, "RoleBinding")["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "team-a"}
    ]
    pvc = only(docs, "PersistentVolumeClaim")
    assert "storageClassName" not in pvc["spec"]  # omitted: the cluster's default StorageClass
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["metadata"]["namespace"] == "team-a"

    no_class = render(tools, "--set", "training.enabled=true", "--set", "training.pvc.storageClassName=-")
    assert only(no_class, "PersistentVolumeClaim")["spec"]["storageClassName"] == ""  # static PVs only
    unkept = render(tools, "--set", "training.enabled=true", "--set", "training.pvc.keep=false")
    assert "annotations" not in only(unkept, "PersistentVolumeClaim")["metadata"]


def test_training_rbac_without_subjects_fails(tools):
    result = helm_template(tools, "--set", "training.enabled=true", "--set", "training.rbac.subjects=null")
    assert result.returncode != 0
    assert "training.rbac.subjects is empty" in result.stderr


def test_notes_describe_training(tools):
    def notes(*sets: str) -> str:
        args = [a for s in sets for a in ("--set", s)]
        result = run(tools["helm"], "install", "kfkit", CHART, "-n", "kfkit", "--dry-run=client", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.split("NOTES:", 1)[1]

    assert "Cluster training" not in notes()
    text = notes("training.enabled=true")
    assert "kubectl -n kfkit get pvc kfkit-training" in text
    assert "kubectl -n kfkit delete pvc kfkit-training" in text  # kept on uninstall
    assert "ServiceAccount kfkit/pipeline-runner" in text
    assert "WARNING" not in text
    assert "the pipeline mounts kfkit-training" in notes("training.enabled=true", "training.pvc.name=shared")
