"""The Helm chart and the kustomize base, checked with real helm and kubectl against the KServe CRD schemas."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kfkit.config import compose
from kfkit.inference_service import build_inference_service, build_serving_runtime

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "helm" / "kfkit"
CRDS = REPO.parent / "shared" / "crds"  # CI clones the repo with shared/ beside it
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
EXPECTED_KINDS = {
    "default-values.yaml": ["ServiceAccount", "ServingRuntime"],
    "with-isvc-values.yaml": ["InferenceService", "Pod", "ServiceAccount", "ServingRuntime"],
    "scale-to-zero-values.yaml": ["InferenceService", "ServiceAccount", "ServingRuntime"],  # grpc-v2: no REST test
}


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """helm and kubectl from scripts/install_k8s_tools.sh (a no-op once installed); skip if it cannot run."""
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "install_k8s_tools.sh")], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.skip(f"scripts/install_k8s_tools.sh failed, no helm/kubectl: {(result.stderr or result.stdout)[-500:]}")
    bin_dir = Path(os.environ.get("KFKIT_TOOLS_DIR") or REPO / ".tools") / "bin"  # as the script decides
    return {"helm": bin_dir / "helm", "kubectl": bin_dir / "kubectl"}


@pytest.fixture(scope="session")
def crds() -> Path:
    if not (CRDS / "validate.py").is_file():
        pytest.skip(f"CRD schemas not found at {CRDS} (shared/ must be cloned beside the repository)")
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
        (["--set", "inferenceService.storageUri=file:///tmp/m/1"], "/inferenceService/storageUri"),
        (["--set", "inferenceService.autoscaling.metric=cpu", "--set", "inferenceService.minReplicas=0"], "minimum"),
        (["--set", "imagee.tag=1"], "additional properties 'imagee' not allowed"),
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
