"""The Helm chart and the kustomize base, checked with real helm and kubectl: lint, the CRD schemas in
../shared/crds for custom resources, kubernetes-validate --strict for core kinds, the values schema.

Longer than ~400 lines on purpose: it is the one place that renders the chart and compares it with the Python
builders, the CRD schemas, kubernetes-validate and the values schema; split, each half would need the same
render/validate helpers and fixtures copied (a conftest import is not allowed here).
"""

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

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kfkit"
CRDS = REPO.parent / "shared" / "crds"  # CI clones the repo with shared/ beside it
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
_COMMON = ["ConfigMap", "PodMonitor", "PrometheusRule", "Role", "RoleBinding", "ServiceAccount"]  # on by default
EXPECTED_KINDS = {
    "minimal-values.yaml": sorted([*_COMMON, "ServingRuntime"]),
    "full-values.yaml": sorted(
        [
            "Broker",
            "ClusterServingRuntime",
            "ConfigMap",
            "ConfigMap",
            "InferenceService",
            "PodMonitor",
            "PodMonitor",
            "PrometheusRule",
            "Role",
            "RoleBinding",
            "ServiceAccount",
            "Pod",
            "Trigger",
            "Trigger",
            "Trigger",
        ]
        + ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"] * 4
        + ["Service"]
    ),  # fmt: skip
    "raw-deployment-keda-values.yaml": sorted(
        [*_COMMON, "ServingRuntime", "InferenceService", "PodMonitor", "Pod"]
        + ["Deployment", "NetworkPolicy", "PodDisruptionBudget", "Service"] * 2
    ),
    "gpu-values.yaml": sorted([*_COMMON, "InferenceService", "Pod", "ServingRuntime"]),
    "with-isvc-values.yaml": sorted([*_COMMON, "InferenceService", "Pod", "ServingRuntime"]),
    "scale-to-zero-values.yaml": sorted([*_COMMON, "InferenceService", "ServingRuntime"]),  # grpc-v2: no REST test
    "training-values.yaml": sorted([*_COMMON, "PersistentVolumeClaim", "Role", "RoleBinding", "ServingRuntime"]),
}
CORE_APIS = ("v1", "apps/v1", "policy/v1", "networking.k8s.io/v1", "rbac.authorization.k8s.io/v1")
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
SECRETS = {  # the values of the full scenario that name Secrets: the chart only ever references them
    "storage.s3.existingSecret",
    "storage.bundled.configSecret",
    "feast.redis.existingSecret",
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


def only(docs: list[dict], kind: str, name: str | None = None) -> dict:
    """The one document of ``kind`` (named ``name``, when given)."""
    (doc,) = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def training(docs: list[dict]) -> set[str]:
    """Kinds of the training objects (the claim, and the Role and RoleBinding named <fullname>-training)."""
    return {d["kind"] for d in docs if d["kind"] in TRAINING_KINDS and d["metadata"]["name"].startswith("kfkit-train")}


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
    custom = [d for d in docs if d["apiVersion"] not in CORE_APIS]
    assert checked.stdout.count("OK ") == len(custom), checked.stdout  # every custom kind has its CRD schema


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_core_kinds_validate_strictly(tools, scenario, tmp_path):
    """kubernetes-validate --strict on every core object of the scenario (it passes unknown CRDs silently)."""
    if not KUBERNETES_VALIDATE.is_file():
        pytest.skip(f"missing tool: kubernetes-validate is not installed in {KUBERNETES_VALIDATE.parent} (make setup)")
    core = [d for d in render(tools, "-f", str(CHART / "ci" / scenario)) if d["apiVersion"] in CORE_APIS]
    files = []
    for i, doc in enumerate(core):
        files.append(tmp_path / f"{i}.yaml")
        files[-1].write_text(yaml.safe_dump(doc, sort_keys=False))
    strict = run(KUBERNETES_VALIDATE, "--strict", "--kubernetes-version", "1.33.0", *files)
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert strict.stdout.count(" passed for resource ") == len(core), strict.stdout
    assert "WARN" not in strict.stdout and "ERROR" not in strict.stdout, strict.stdout


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] == "Deployment":
        spec = spec["template"]["spec"]
    elif doc["kind"] == "Service" and doc["apiVersion"].startswith("serving.knative.dev"):
        spec = spec["template"]["spec"]
    elif doc["kind"] not in ("Pod", "ServingRuntime", "ClusterServingRuntime"):
        return []
    return spec.get("containers", []) + spec.get("initContainers", [])


def test_every_container_is_restricted_with_resources(tools):
    """Pod Security Standards "restricted" and resources on every container of the full scenario."""
    docs = render(tools, "-f", str(CHART / "ci" / "full-values.yaml"))
    containers = [(d["kind"], d["metadata"]["name"], c) for d in docs for c in _containers(d)]
    assert len(containers) == 7  # runtime, detector, trigger, feast, redis, s3 store, test pod
    for kind, name, c in containers:
        where = f"{kind} {name} {c['name']}"
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["runAsNonRoot"] is True, where
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}, where
        assert c["resources"]["requests"] and c["resources"]["limits"], where
        assert "@sha256:" in c["image"], where  # every image of the scenario is pinned
    for doc in docs:
        if doc["kind"] in ("Deployment", "Pod"):
            pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else doc["spec"]
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, doc["metadata"]["name"]
            assert pod["automountServiceAccountToken"] is False, doc["metadata"]["name"]
    text = helm_template(tools, "-f", str(CHART / "ci" / "full-values.yaml")).stdout
    assert "kind: Secret\n" not in text  # the chart creates no Secret: it references existing ones


def test_pipeline_runner_role_is_least_privilege(tools):
    docs = render(tools, "--namespace", "team-a")
    role = only(docs, "Role", "kfkit-pipeline-runner")
    assert typed(role) == role
    assert grants(role) == {
        *{("serving.kserve.io", "inferenceservices", v) for v in ("get", "list", "watch", "create", "patch")},
        ("serving.kserve.io", "inferenceservices/status", "get"),
        *{("serving.kserve.io", "servingruntimes", v) for v in ("get", "create", "patch")},
        ("", "pods", "get"), ("", "pods", "list"), ("", "pods/log", "get"),
    }  # fmt: skip
    assert role["metadata"]["namespace"] == "team-a"
    assert not [d for d in docs if d["kind"].startswith("Cluster") and d["kind"] != "ClusterServingRuntime"]
    binding = only(docs, "RoleBinding", "kfkit-pipeline-runner")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "team-a"}]


def test_payload_events_and_drift_events_are_wired(tools):
    """Predictor -> Broker -> detector -> Broker -> retrain trigger (full); straight to the Services (raw)."""
    full = render(tools, "-f", str(CHART / "ci" / "full-values.yaml"))
    broker = "http://broker-ingress.knative-eventing.svc.cluster.local/kfkit/kfkit"
    args = only(full, "InferenceService")["spec"]["predictor"]["model"]["args"]
    assert f"--payload-log-url={broker}" in args
    triggers = {d["metadata"]["name"]: d["spec"] for d in full if d["kind"] == "Trigger"}
    assert triggers["kfkit-drift-payloads"]["filter"] == {"attributes": {"inferenceservicename": "fraud-mlp"}}
    assert triggers["kfkit-drift-payloads"]["subscriber"]["ref"]["kind"] == "Service"
    assert {t["filter"]["attributes"]["type"] for n, t in triggers.items() if "retrain" in n} == {
        "org.kfkit.drift.data", "org.kfkit.drift.performance"}  # fmt: skip
    (detector,) = [d for d in full if d["kind"] == "Service" and d["apiVersion"] == "serving.knative.dev/v1"]
    assert f"--sink={broker}" in detector["spec"]["template"]["spec"]["containers"][0]["args"]

    raw = render(tools, "-f", str(CHART / "ci" / "raw-deployment-keda-values.yaml"))
    isvc = only(raw, "InferenceService")
    assert (
        "--payload-log-url=http://kfkit-drift.kfkit.svc.cluster.local:8090"
        in isvc["spec"]["predictor"]["model"]["args"]
    )
    deployments = {d["metadata"]["name"]: d for d in raw if d["kind"] == "Deployment"}
    drift_args = deployments["kfkit-drift"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--sink=http://kfkit-retrain.kfkit.svc.cluster.local:8091" in drift_args
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"


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
        (["--set", "drift.enabeld=true"], "additional properties 'enabeld' not allowed"),
        (["--set", "drift.port=http"], "at '/drift/port': got string, want integer"),
        (
            ["--set", "monitoring.prometheusRule.thresholds.errorRatio=2"],
            "/monitoring/prometheusRule/thresholds/errorRatio",
        ),
        (["--set", "storage.s3.existingSecret=Not_A_Name"], "/storage/s3/existingSecret"),
        (["--set", "storage.s3.password=hunter2"], "additional properties 'password' not allowed"),
        (["--set", "image.digest=sha256:abc"], "/image/digest"),
        (["--set", "servingRuntime.kind=Runtime"], "/servingRuntime/kind"),
        (["--set", "drift.kind=Pod"], "/drift/kind"),
        (["--set", "monitoring.rateWindow=5 minutes"], "/monitoring/rateWindow"),
    ],
)
def test_invalid_values_are_rejected_by_the_schema(tools, args, complaint):
    result = helm_template(tools, *args)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert complaint in result.stderr


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (["drift.enabled=true", "drift.modelUri=s3://m/fraud-mlp/3/"],
         "drift.enabled=true needs S3 credentials: set storage.s3.existingSecret"),
        (["retrain.enabled=true", "retrain.kfpHost=http://ml-pipeline.kubeflow:8888"],
         "retrain.enabled=true needs S3 credentials: set storage.s3.existingSecret"),
        (["feast.enabled=true", "feast.registry=s3://f/registry.db"],
         "feast.enabled=true needs S3 credentials: set storage.s3.existingSecret"),
        (["storage.bundled.enabled=true"], "storage.bundled.enabled=true needs storage.bundled.configSecret"),
        (["drift.enabled=true", "storage.s3.existingSecret=kfkit-s3"], "drift.enabled=true needs drift.modelUri"),
        (["retrain.enabled=true", "storage.s3.existingSecret=kfkit-s3"], "retrain.enabled=true needs retrain.kfpHost"),
        (["inferenceService.storageUri=s3://b/m/1", "inferenceService.payloadLog.enabled=true"],
         "there is nowhere to send the events"),
        (["inferenceService.storageUri=s3://b/m/1", "inferenceService.deploymentMode=Standard",
          "inferenceService.autoscaling.autoscaler=hpa"], "KServe's HPA scales on cpu or memory only"),
    ],
)  # fmt: skip
def test_missing_required_values_are_rejected_with_the_fix(tools, sets, complaint):
    """A component that needs a Secret name (or a URI) says which value to set, and how."""
    result = helm_template(tools, *[a for item in sets for a in ("--set", item)])
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr
    with_irsa = helm_template(tools, *[a for item in sets for a in ("--set", item)], "--set", "storage.s3.useIrsa=true")
    if "S3 credentials" in complaint:  # IRSA (the ServiceAccount's role) is the other way to S3
        assert with_irsa.returncode == 0, with_irsa.stderr


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
    notes = {k: v for k, v in chart["metadata"]["annotations"].items() if not k.startswith("checkov.io/")}
    assert notes == built["metadata"]["annotations"]
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
    assert not training(render(tools))
    both_off = ["--set", "training.enabled=true", "--set", "training.pvc.create=false"]
    both_off += ["--set", "training.rbac.create=false"]
    assert not training(render(tools, *both_off))


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
    role, binding = only(docs, "Role", "kfkit-training"), only(docs, "RoleBinding", "kfkit-training")
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
    assert only(docs, "RoleBinding", "kfkit-training")["subjects"] == [
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


def _leaves(node: Any, path: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return set().union(*(_leaves(v, f"{path}.{k}" if path else k) for k, v in node.items()))
    return {path}


def test_readme_table_documents_every_value():
    """helm/kfkit/README.md's table has a row for every value (or its documented parent), and no stale row."""
    import re

    table = (CHART / "README.md").read_text().split("## Values", 1)[1]
    rows = set(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE))
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undocumented = sorted(p for p in _leaves(values) if not any(p == r or p.startswith(f"{r}.") for r in rows))
    assert not undocumented, f"values without a README row: {undocumented}"
    for row in rows:
        node = values
        for key in row.split("."):
            assert isinstance(node, dict) and key in node, f"README row {row} is not a value"
            node = node[key]
    assert len(rows) > 100


def test_standard_mode_keda_matches_the_builder(tools):
    """Standard mode with KEDA on rps: the chart's predictor autoScaling and annotations are the builder's."""
    cfg = compose(["deploy=kserve-standard"])
    uri = "s3://kfkit-models/breast-cancer-mlp/4"
    built = build_inference_service(cfg, storage_uri=uri)
    metric = built["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]
    sets = [f"inferenceService.storageUri={uri}", "inferenceService.name=breast-cancer-mlp",
            "inferenceService.deploymentMode=Standard", "inferenceService.autoscaling.metric=rps",
            f"inferenceService.autoscaling.target={metric['target']['value']}",
            f"inferenceService.autoscaling.prometheusUrl={metric['metric']['serverAddress']}",
            f"inferenceService.minReplicas={built['spec']['predictor']['minReplicas']}",
            f"inferenceService.maxReplicas={built['spec']['predictor']['maxReplicas']}"]  # fmt: skip
    chart = only(render(tools, *[a for s in sets for a in ("--set", s)]), "InferenceService")
    assert chart["spec"]["predictor"]["autoScaling"] == built["spec"]["predictor"]["autoScaling"]
    notes = {k: v for k, v in chart["metadata"]["annotations"].items() if not k.startswith("checkov.io/")}
    assert notes == built["metadata"]["annotations"]


def test_gpu_scenario_reaches_the_predictor(tools):
    docs = render(tools, "-f", str(CHART / "ci" / "gpu-values.yaml"))
    predictor = only(docs, "InferenceService")["spec"]["predictor"]
    resources = predictor["model"]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert predictor["autoScaling"]["metrics"][0]["resource"] == {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}  # fmt: skip
    runtime = only(docs, "ServingRuntime")["spec"]
    assert runtime["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert runtime["tolerations"][0]["key"] == "nvidia.com/gpu"
