"""manifests/ overlays and `kfkit deploy --dry-run` output: generated from the builder, every object valid (CRDs
against ../shared/crds, core kinds with kubernetes-validate --strict), and checkov with 0 failed checks.

Regenerate the overlays' patches and the training examples after changing the builder or configs/deploy:
``KFKIT_WRITE_MANIFESTS=1 .venv/bin/pytest tests/deploy/test_deploy_manifests.py -k generated``.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kfkit.config import compose
from kfkit.deploy import promql
from kfkit.deploy.inference_service import build_inference_service, build_serving_runtime, checkov_annotations
from kfkit.deploy.kserve import with_scan_notes

pytestmark = pytest.mark.slow  # kustomize renders, five CLI dry runs, one checkov run

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
CRDS = REPO.parent / "shared" / "crds"
KUBECTL = Path(os.environ.get("KFKIT_TOOLS_DIR") or REPO / ".tools") / "bin" / "kubectl"
CHECKOV = REPO / ".tools" / "checkov-venv" / "bin" / "checkov"
KUBERNETES_VALIDATE = Path(sys.executable).parent / "kubernetes-validate"
NAME = "breast-cancer-mlp"
BASE_URI = "s3://kfkit-models/breast-cancer-mlp/1"
OVERLAYS = {  # overlay -> (deploy config it renders, kustomize components)
    "dev": ("kserve-dev", ["eventing", "drift-knative"]),
    "prod-gpu": ("kserve-gpu", ["eventing", "drift-knative"]),
    "raw-deployment": ("kserve-standard", ["drift-deployment"]),
}
HEADERS = {
    "dev": "A development namespace (configs/deploy/kserve-dev.yaml): Knative mode, scale to zero after 5 idle "
    "minutes,\n# payloads through the Broker to the drift detector (a Knative Service).",
    "prod-gpu": "Production on a GPU node pool (configs/deploy/kserve-gpu.yaml): one nvidia.com/gpu per replica, "
    "node selector and\n# toleration, a warm minimum and a slow scale-down; payloads through the Broker.",
    "raw-deployment": "Standard mode (configs/deploy/kserve-standard.yaml): a Deployment scaled by KEDA on the "
    "predictors' request\n# rate from Prometheus; payloads straight to the drift detector's Service.",
}
TRAINING_JOB = "kfkit-train-example"
TRAINING_SKIPS = {
    **checkov_annotations("CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6", "CKV_K8S_40"),
    "checkov.io/skip5": "CKV_K8S_8=a batch training pod serves no traffic; a liveness probe cannot tell a long "
    "all-reduce from a hang, and activeDeadlineSeconds bounds the job instead",
    "checkov.io/skip6": "CKV_K8S_9=a batch training pod serves no traffic to gate with a readiness probe",
}
DRY_RUNS = {  # name -> overrides of `kfkit deploy --dry-run`
    "knative": ["deploy=kserve"],
    "dev": ["deploy=kserve-dev"],
    "prod-gpu": ["deploy=kserve-gpu"],
    "standard-keda": ["deploy=kserve-standard"],
    "standard-hpa": ["deploy=kserve-standard", "deploy.autoscaler=hpa", "deploy.autoscaling_metric=cpu",
                     "deploy.autoscaling_target=70"],
    "transformer-custom": ["deploy=kserve", "deploy.predictor_image=ghcr.io/kfkit/kfkit:0.1.0",
                           "deploy.feast_repo=/opt/feast", "deploy.logger_url=http://kfkit-drift.kfkit:8090"],
}  # fmt: skip


# --- generating the overlays --------------------------------------------------------------------------------


def merge_patch(base: Any, target: Any) -> Any:
    """The JSON merge patch (RFC 7386) that turns ``base`` into ``target`` (lists are replaced whole)."""
    if not isinstance(base, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    patch: dict[str, Any] = {key: None for key in base if key not in target}
    for key, value in target.items():
        if key not in base:
            patch[key] = copy.deepcopy(value)
        elif base[key] != value:
            patch[key] = merge_patch(base[key], value)
    return patch


def expected_isvc(config: str) -> dict[str, Any]:
    cfg = compose([f"deploy={config}"])
    return with_scan_notes([build_inference_service(cfg, storage_uri=BASE_URI, model_name=NAME)])[0]


def expected_runtime_annotations() -> dict[str, str]:
    return checkov_annotations("CKV_K8S_43", "CKV_K8S_15", "CKV2_K8S_6", "CKV_K8S_40", "CKV_K8S_29", "CKV_K8S_38")


def _dump(path: Path, header: str, doc: dict[str, Any]) -> None:
    path.write_text(f"# {header}\n" + yaml.safe_dump(doc, sort_keys=False, width=200))


def write_manifests() -> None:
    """Write every overlay's kustomization and patches, and the training examples, from the builders."""
    from kfkit.training.jobs import build_training_job

    (base_isvc,) = yaml.safe_load_all((MANIFESTS / "base" / "inferenceservice.yaml").read_text())
    for overlay, (config, components) in OVERLAYS.items():
        folder = MANIFESTS / "overlays" / overlay
        folder.mkdir(parents=True, exist_ok=True)
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["../../base"],
            "components": [f"../../components/{c}" for c in components],
            "patches": [{"path": "servingruntime-patch.yaml"}, {"path": "inferenceservice-patch.yaml"}],
        }
        header = (
            f"{HEADERS[overlay]}\n# Generated by tests/deploy/test_deploy_manifests.py (KFKIT_WRITE_MANIFESTS=1); "
            f"`kfkit deploy --dry-run deploy={config}` builds the same InferenceService."
        )
        _dump(folder / "kustomization.yaml", header, kustomization)
        target = expected_isvc(config)
        patch = merge_patch(base_isvc, target)
        patch = {"apiVersion": target["apiVersion"], "kind": target["kind"],
                 "metadata": {"name": NAME, "namespace": "kfkit",
                              **{k: v for k, v in patch.get("metadata", {}).items() if k != "name"}},
                 **{k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}}  # fmt: skip
        _dump(folder / "inferenceservice-patch.yaml", f"The InferenceService of deploy={config} (a merge patch on "
              "the base's).", patch)  # fmt: skip
        runtime = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime",
                   "metadata": {"name": "kfkit", "namespace": "kfkit",
                                "annotations": expected_runtime_annotations()}}  # fmt: skip
        _dump(
            folder / "servingruntime-patch.yaml", "checkov findings accepted for the runtime's pod, with why.", runtime
        )
    training = MANIFESTS / "training"
    training.mkdir(exist_ok=True)
    cfg = compose(["training=gpu"])
    for kind in ("pytorchjob", "trainjob"):
        job = build_training_job(cfg, kind, name=TRAINING_JOB)
        job["metadata"]["annotations"] = TRAINING_SKIPS
        _dump(training / f"{kind}.yaml", f"Example {job['kind']} (training=gpu), as the train step submits it; the "
              "data and config go on the claim kfkit-training first (kfkit.training.cluster).", job)  # fmt: skip


def test_overlays_and_training_examples_are_generated_from_the_builders(tmp_path):
    if os.environ.get("KFKIT_WRITE_MANIFESTS"):
        write_manifests()
    saved = tmp_path / "manifests"
    shutil.copytree(MANIFESTS, saved)
    write_manifests()  # regenerating changes nothing: the files are what the builders write
    try:
        for path in sorted(p for p in saved.rglob("*.yaml")):
            assert (MANIFESTS / path.relative_to(saved)).read_text() == path.read_text(), path.relative_to(saved)
    finally:
        shutil.rmtree(MANIFESTS)
        shutil.copytree(saved, MANIFESTS)


# --- rendering ----------------------------------------------------------------------------------------------


def kustomize(folder: Path) -> list[dict[str, Any]]:
    if not KUBECTL.is_file():
        result = subprocess.run(["bash", REPO / "scripts" / "install_k8s_tools.sh"], capture_output=True, text=True)
        if not KUBECTL.is_file():
            pytest.skip(f"missing tool: kubectl (scripts/install_k8s_tools.sh failed: {result.stderr[-300:]})")
    result = subprocess.run([KUBECTL, "kustomize", folder], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.fixture(scope="module")
def rendered(s3_endpoint, tmp_path_factory) -> dict[str, list[dict[str, Any]]]:
    """Every set: each overlay, the training examples, and `kfkit deploy --dry-run` per deploy variant."""
    from deploy_support import BUCKET, publish_versions

    from kfkit.registry import open_registry

    sets = {f"overlay-{o}": kustomize(MANIFESTS / "overlays" / o) for o in OVERLAYS}
    sets["training"] = kustomize(MANIFESTS / "training")
    root = tmp_path_factory.mktemp("dry-run")
    uri = f"s3://{BUCKET}/dry-run"
    publish_versions(open_registry(uri, endpoint=s3_endpoint, cache_dir=root / "cache"), NAME, 1, root)
    env = {**os.environ, "KUBECONFIG": str(root / "no-kubeconfig")}
    for name, overrides in DRY_RUNS.items():
        result = subprocess.run(
            [sys.executable, "-m", "kfkit.cli", "deploy", "--dry-run", "--model", NAME, "--version", "1", *overrides,
             "registry=s3", f"registry.uri={uri}", f"registry.endpoint={s3_endpoint}"],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        sets[f"dry-run-{name}"] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return sets


def test_overlays_render_the_builders_inference_service(rendered):
    base_runtime = build_serving_runtime(compose(["deploy=kserve"]))
    for overlay, (config, _) in OVERLAYS.items():
        docs = rendered[f"overlay-{overlay}"]
        (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
        assert isvc == expected_isvc(config), overlay
        (runtime,) = [d for d in docs if d["kind"] == "ServingRuntime"]
        assert runtime["spec"] == base_runtime["spec"]
        assert {d["metadata"]["namespace"] for d in docs} == {"kfkit"}
    kinds = {o: sorted(d["kind"] for d in rendered[f"overlay-{o}"]) for o in OVERLAYS}
    knative = ["Broker", "InferenceService", "Service", "ServiceAccount", "ServingRuntime", "SinkBinding", "Trigger"]
    raw = ["Deployment", "InferenceService", "Service", "ServiceAccount", "ServingRuntime"]
    assert kinds == {"dev": knative, "prod-gpu": knative, "raw-deployment": raw}
    assert sorted(d["kind"] for d in rendered["training"]) == ["PersistentVolumeClaim", "PyTorchJob", "TrainJob"]


def test_overlay_wiring(rendered):
    dev = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlay-dev"]}
    logger = dev[("InferenceService", NAME)]["spec"]["predictor"]["logger"]
    assert logger == {"mode": "all", "url": "http://broker-ingress.knative-eventing.svc.cluster.local/kfkit/kfkit"}
    trigger = dev[("Trigger", "kfkit-drift-payloads")]["spec"]
    assert trigger["broker"] == "kfkit" and trigger["subscriber"]["ref"]["name"] == "kfkit-drift"
    drift = dev[("Service", "kfkit-drift")]["spec"]["template"]["spec"]["containers"][0]
    assert drift["command"] == ["python", "-m", "kfkit.serving.drift"] and "--port=8090" in drift["args"]
    raw = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlay-raw-deployment"]}
    isvc = raw[("InferenceService", NAME)]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/autoscalerClass"] == "keda"
    (metric,) = isvc["spec"]["predictor"]["autoScaling"]["metrics"]
    assert metric["external"]["metric"]["query"] == promql.request_rate("kfkit", NAME)
    assert metric["external"]["target"] == {"type": "Value", "value": "200"}
    assert isvc["spec"]["predictor"]["logger"]["url"] == "http://kfkit-drift.kfkit.svc.cluster.local:8090"
    assert raw[("Service", "kfkit-drift")]["spec"]["ports"][0]["port"] == 8090
    gpu = {(d["kind"], d["metadata"]["name"]): d for d in rendered["overlay-prod-gpu"]}
    predictor = gpu[("InferenceService", NAME)]["spec"]["predictor"]
    assert predictor["model"]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert predictor["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4"}
    assert predictor["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_training_examples_match_the_train_steps_jobs(rendered):
    from kfkit.training.jobs import build_training_job

    cfg = compose(["training=gpu"])
    jobs = {d["kind"]: d for d in rendered["training"]}
    for kind in ("pytorchjob", "trainjob"):
        job = build_training_job(cfg, kind, name=TRAINING_JOB)
        example = copy.deepcopy(jobs[job["kind"]])
        assert example["metadata"].pop("annotations") == TRAINING_SKIPS
        assert example == job


# --- validation -----------------------------------------------------------------------------------------------

CORE_APIS = ("v1", "apps/v1")


def is_core(doc: dict[str, Any]) -> bool:
    return doc["apiVersion"] in CORE_APIS


def test_every_rendered_object_validates(rendered, tmp_path):
    if not (CRDS / "validate.py").is_file():
        pytest.skip(f"missing tool: CRD schemas not found at {CRDS} (shared/ must be cloned beside the repository)")
    if not KUBERNETES_VALIDATE.is_file():
        pytest.skip(f"missing tool: kubernetes-validate is not installed in {KUBERNETES_VALIDATE.parent} (make setup)")
    custom, core = tmp_path / "custom", tmp_path / "core"
    custom.mkdir(), core.mkdir()
    counts = {"custom": 0, "core": 0}
    for name, docs in rendered.items():
        cr = [d for d in docs if not is_core(d)]
        if cr:
            (custom / f"{name}.yaml").write_text(yaml.safe_dump_all(cr, sort_keys=False))
            counts["custom"] += len(cr)
        for i, doc in enumerate(d for d in docs if is_core(d)):
            (core / f"{name}-{i}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
            counts["core"] += 1
    checked = subprocess.run([sys.executable, CRDS / "validate.py", "--crds", CRDS, custom], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("OK ") == counts["custom"], checked.stdout  # none skipped: every kind has its CRD
    strict = subprocess.run([KUBERNETES_VALIDATE, "--strict", "--kubernetes-version", "1.33.0",
                             *sorted(core.glob("*.yaml"))], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert strict.returncode == 0, strict.stdout + strict.stderr
    assert strict.stdout.count(" passed for resource ") == counts["core"], strict.stdout
    assert "WARN" not in strict.stdout and "ERROR" not in strict.stdout, strict.stdout


# --- checkov ------------------------------------------------------------------------------------------------

_POD_FIELDS = ("containers", "initContainers", "volumes", "nodeSelector", "tolerations", "affinity", "imagePullSecrets",
               "securityContext", "serviceAccountName", "automountServiceAccountToken")  # fmt: skip


def _pod(name: str, source: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A Pod for checkov, carrying the source object's annotations (its checkov.io/skip notes)."""
    meta = {"name": name, "namespace": source["metadata"].get("namespace", "default"),
            "labels": dict(source["metadata"].get("labels") or {}),
            "annotations": {k: v for k, v in (source["metadata"].get("annotations") or {}).items()
                            if k.startswith("checkov.io/")}}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _pick(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(spec[k]) for k in _POD_FIELDS if k in spec}


def _automount(spec: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Kubernetes takes automountServiceAccountToken from the ServiceAccount when the pod leaves it unset."""
    for doc in docs:
        if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == spec.get("serviceAccountName"):
            spec.setdefault("automountServiceAccountToken", doc.get("automountServiceAccountToken"))
    return spec


def pods_of(docs: list[dict[str, Any]], runtime_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pods the custom resources become (checkov looks inside core workload kinds only).

    An InferenceService predictor on the kfkit runtime is the runtime's container with the model merged in (as
    KServe merges it), a custom-container predictor or a transformer is its own pod, a bare ServingRuntime is one,
    a Knative Service is its template, a PyTorchJob one pod per replica. A set without a ServingRuntime (a
    dry run with a custom container) merges with the base's.
    """
    runtimes = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "ServingRuntime"}
    pods = []
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "ServingRuntime":
            pods.append(_pod(f"servingruntime-{name}", doc, _pick(doc["spec"])))
        elif kind == "InferenceService":
            predictor = doc["spec"]["predictor"]
            if "model" in predictor:
                spec = _pick(runtimes.get(predictor["model"]["runtime"], runtime_spec)) | _pick(predictor)
                (container,) = spec["containers"]
                for key, value in predictor["model"].items():
                    if key in ("args", "env", "volumeMounts"):
                        container[key] = container.get(key, []) + value
                    elif key in ("resources", "image"):
                        container[key] = value
            else:
                spec = _pick(predictor)
            pods.append(_pod(f"predictor-{name}", doc, _automount(spec, docs)))
            if "transformer" in doc["spec"]:
                pods.append(_pod(f"transformer-{name}", doc, _automount(_pick(doc["spec"]["transformer"]), docs)))
        elif kind == "Service" and doc["apiVersion"].startswith("serving.knative.dev"):
            pods.append(_pod(f"ksvc-{name}", doc, _automount(_pick(doc["spec"]["template"]["spec"]), docs)))
        elif kind == "PyTorchJob":
            for replica, replica_spec in doc["spec"]["pytorchReplicaSpecs"].items():
                spec = copy.deepcopy(replica_spec["template"]["spec"])
                pods.append(_pod(f"pytorchjob-{name}-{replica.lower()}", doc, spec))
    return pods


def test_checkov_finds_no_failed_check(rendered, tmp_path):
    """Every accepted finding is a checkov.io/skip annotation on its object, with the reason; none fails."""
    if not CHECKOV.is_file():
        pytest.skip(f"missing tool: checkov is not installed at {CHECKOV}: run `make tools`")
    runtime_spec = build_serving_runtime(compose(["deploy=kserve"]))["spec"]
    expanded = {}
    for name, docs in rendered.items():
        if name == "training":
            # The TrainJob's pod is the platform's ClusterTrainingRuntime patched: tests/helm/test_checkov.py scans that
            # job (the same one, asserted above) with its pod; the PyTorchJob's pods are scanned here.
            docs = [d for d in docs if d["kind"] != "TrainJob"]
        expanded[name] = docs + pods_of(docs, runtime_spec)
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump_all(expanded[name], sort_keys=False))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    result = subprocess.run([CHECKOV, "--directory", tmp_path, "--framework", "kubernetes", "--skip-download",
                             "--compact", "--output", "json", "--soft-fail"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["summary"]["parsing_errors"] == 0
    failed = [f"{r['check_id']} {r['check_name']}: {r['resource']} ({Path(r['file_path']).stem})"
              for r in report["results"]["failed_checks"]]  # fmt: skip
    assert not failed, "\n".join(failed)
    skipped = report["results"]["skipped_checks"]
    assert all(len(r["check_result"].get("suppress_comment", "")) > 20 for r in skipped)  # each with its reason
    privileged = {(Path(r["file_path"]).stem, r["resource"]) for r in report["results"]["passed_checks"]
                  if r["check_id"] == "CKV_K8S_16"}  # fmt: skip
    for name, docs in expanded.items():  # the container checks really ran on every pod
        for doc in docs:
            if doc["kind"] in ("Pod", "Deployment"):
                assert (name, f"{doc['kind']}.{doc['metadata']['namespace']}.{doc['metadata']['name']}") in privileged
