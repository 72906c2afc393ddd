"""checkov's Kubernetes policies on everything kfkit applies to a cluster: chart, kustomize base, training jobs.

checkov only looks inside the pod specs of core workload kinds (Pod, Deployment, Job, ...). kfkit's pods come
from custom resources (ServingRuntime + InferenceService, PyTorchJob, TrainJob), which checkov passes over
without a single container check. So each rendered set is scanned together with the pods those resources
become: a ``Pod`` per InferenceService (its runtime's container with the predictor's overrides merged in, as
KServe does), per bare ServingRuntime, per PyTorchJob replica and per TrainJob node. The containers KServe
and Knative add themselves (storage initializer, queue-proxy) are theirs, not kfkit's, and are not modelled.

The chart writes each finding it accepts on the object as a ``checkov.io/skip<n>: CHECK=reason`` annotation
(templates/_helpers.tpl, kfkit.checkovSkips), copied here onto the pods its custom resources become, so checkov
reports it as skipped with its reason: every chart scenario must have 0 failed checks.
For the kustomize base and the training jobs, every failed check is either in SKIPS / SOURCE_SKIPS (does not
apply, or an accepted default, with the reason), in PENDING (a genuine finding whose fix lies outside the chart;
the test insists it still fails, so
the entry must go when the fix lands), or it fails the test.

Longer than ~400 lines: building the pods checkov cannot see (custom resources) and classifying its findings
belong with the scan that uses them.

Run by hand: ``.venv/bin/pytest tests/helm/test_checkov.py -s`` prints passed/failed/skipped per rendered set.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow  # 8-12 s on 2 busy cores: 4 helm renders, kustomize, 3 composes, 2 checkov runs

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "kfkit"
CHECKOV = REPO / ".tools" / "checkov-venv" / "bin" / "checkov"
SCENARIOS = sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
TRAINING_CONFIGS = ("gpu", "pytorchjob", "trainjob")
JOB_KINDS = ("pytorchjob", "trainjob")
SERVING = ("ServingRuntime", "InferenceService")
TRAINING = ("PyTorchJob", "TrainJob")
HELM_TEST = "helm-test"  # the chart's `helm test` Pod
KNATIVE = "KnativeService"  # a serving.knative.dev Service (the drift detector with drift.kind=KnativeService)

# Failed checks accepted everywhere, with the reason.
SKIPS: dict[str, str] = {
    "CKV_K8S_43": (
        "Image digest: the defaults name a tag, because the digest of the user's build is not known in "
        "advance. The chart takes image.digest (ci/with-isvc-values.yaml pins one, and the test below "
        "asserts that this check then passes)."
    ),
    "CKV_K8S_15": (
        "imagePullPolicy Always: with a tag it re-pulls on every pod start (slower scale from zero, and a "
        "registry outage stops scaling). Pinning image.digest passes this check too (asserted below)."
    ),
    "CKV2_K8S_6": (
        "NetworkPolicy: traffic reaches the predictors through the cluster's Knative activator or ingress "
        "gateway, and the storage initializer and training jobs reach the cluster's object store and each "
        "other; those peers are per cluster, so the namespace's policy belongs to the platform team."
    ),
    "CKV_K8S_40": (
        "UID >= 10000: every kfkit pod runs as UID 1000, the image's USER (Dockerfile), which also owns what "
        "the kfp steps write to the shared training claim. A high UID only matters after a container escape, "
        "which no privilege escalation, no capabilities and RuntimeDefault seccomp already guard against."
    ),
}
# Failed checks accepted for the pods of one kind of source (see source_kind), with the reason.
SOURCE_SKIPS: dict[tuple[str, str], str] = {
    **{
        (source, "CKV_K8S_29"): (
            "Pod-level securityContext: a ServingRuntime has no such field and Knative drops most of it from "
            "an InferenceService unless its podspec-securitycontext flag is on. The same settings sit on the "
            "container, where CKV_K8S_20/22/23/28/30/31/37 check them."
        )
        for source in SERVING
    },
    ("ServingRuntime", "CKV_K8S_38"): (
        "Service account token: a ServingRuntime cannot say; each InferenceService names the ServiceAccount "
        "(automountServiceAccountToken: false in the chart and the base), checked on its pod."
    ),
    ("TrainJob", "CKV_K8S_38"): (
        "Service account token: a TrainJob's runtime patch has no automountServiceAccountToken field; the "
        "ClusterTrainingRuntime (the platform's) decides it."
    ),
    **{
        (source, check): (
            "Probes: a batch training pod serves no traffic to gate, and a liveness probe cannot tell a long "
            "all-reduce from a hang; the job's activeDeadlineSeconds bounds it instead."
        )
        for source in TRAINING
        for check in ("CKV_K8S_8", "CKV_K8S_9")
    },
}
# Genuine findings whose fix lies in files the chart does not own: the test asserts each still fails, so an
# entry must be deleted once its fix lands. Key: (source kind, check id); value: where the fix goes.
PENDING: dict[tuple[str, str], str] = {}
PRIVILEGED = "CKV_K8S_16"  # "Container should not be privileged"


@dataclass
class Finding:
    """One checkov result on one resource of one rendered set."""

    check: str
    name: str
    resource: str
    source: str
    reason: str = ""


@dataclass
class SetResult:
    """checkov's results for one rendered set (one file)."""

    passed: list[Finding] = field(default_factory=list)
    failed: list[Finding] = field(default_factory=list)
    skipped: list[Finding] = field(default_factory=list)

    def classify(self) -> dict[str, list[Finding]]:
        """Failed checks split into skipped, pending and unexpected."""
        out: dict[str, list[Finding]] = {"skipped": [], "pending": [], "unexpected": []}
        for f in self.failed:
            if f.check in SKIPS or (f.source, f.check) in SOURCE_SKIPS:
                out["skipped"].append(f)
            elif (f.source, f.check) in PENDING:
                out["pending"].append(f)
            else:
                out["unexpected"].append(f)
        return out


# --- rendering ---------------------------------------------------------------------------------------------


def run(*cmd: str | Path, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def tools() -> dict[str, Path]:
    """helm and kubectl from scripts/install_k8s_tools.sh (a no-op once installed); skip only without checkov."""
    if not CHECKOV.is_file():
        pytest.skip(
            f"missing tool: checkov is not installed at {CHECKOV}: run `make tools` (it builds .tools/checkov-venv)"
        )
    result = run("bash", REPO / "scripts" / "install_k8s_tools.sh")
    assert result.returncode == 0, f"no helm/kubectl: {(result.stderr or result.stdout)[-500:]}"
    bin_dir = Path(os.environ.get("KFKIT_TOOLS_DIR") or REPO / ".tools") / "bin"  # as the script decides
    return {"helm": bin_dir / "helm", "kubectl": bin_dir / "kubectl"}


def render_sets(tools: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    """Every rendered set kfkit can apply: set name -> its documents."""
    from kfkit.config import compose
    from kfkit.training.jobs import render_training_job

    sets: dict[str, str] = {}
    for scenario in SCENARIOS:
        result = run(tools["helm"], "template", "kfkit", CHART, "--namespace", "kfkit", "-f", CHART / "ci" / scenario)
        assert result.returncode == 0, result.stderr
        sets[f"chart-{scenario.removesuffix('-values.yaml')}"] = result.stdout
    result = run(tools["kubectl"], "kustomize", REPO / "manifests" / "base")
    assert result.returncode == 0, result.stderr
    sets["kustomize-base"] = result.stdout
    for config in TRAINING_CONFIGS:
        cfg = compose([f"training={config}"])
        for kind in JOB_KINDS:
            sets[f"training-{config}-{kind}"] = render_training_job(cfg, kind, name=f"{config}-{kind}")
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in sets.items()}


# --- pods behind the custom resources --------------------------------------------------------------------

_POD_FIELDS = (  # PodSpec fields a ServingRuntime or an InferenceService predictor may carry
    "containers", "initContainers", "volumes", "nodeSelector", "tolerations", "affinity", "imagePullSecrets",
    "hostIPC", "hostNetwork", "hostPID", "schedulerName", "securityContext", "serviceAccountName",
    "automountServiceAccountToken",
)  # fmt: skip


def _pod(
    name: str, namespace: str, labels: dict[str, str] | None, spec: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
    """A Pod for checkov, with the source object's checkov.io/skip annotations (its accepted findings)."""
    notes = {k: v for k, v in source["metadata"].get("annotations", {}).items() if k.startswith("checkov.io/")}
    meta = {"name": name, "namespace": namespace, "labels": dict(labels or {}), "annotations": notes}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _pick(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(spec[k]) for k in _POD_FIELDS if k in spec}


def _with_model(runtime_spec: dict[str, Any], predictor: dict[str, Any]) -> dict[str, Any]:
    """The predictor pod: the runtime's pod, the predictor's pod fields, and its ``model`` merged into the
    runtime's kserve-container the way KServe merges them (lists appended, ports merged by number)."""
    spec = _pick(runtime_spec) | _pick(predictor)
    model = predictor.get("model", {})
    (container,) = [c for c in spec["containers"] if c["name"] == model.get("name", "kserve-container")]
    for key, value in model.items():
        if key in ("args", "env", "volumeMounts"):
            container[key] = container.get(key, []) + copy.deepcopy(value)
        elif key == "ports":
            ports = {p["containerPort"]: p for p in container.get("ports", []) + value}
            container["ports"] = list(ports.values())
        elif key in ("image", "command", "resources", "securityContext", "livenessProbe", "readinessProbe"):
            container[key] = copy.deepcopy(value)
    return spec


def _effective_token_mount(spec: dict[str, Any], docs: list[dict[str, Any]]) -> None:
    """Kubernetes takes automountServiceAccountToken from the ServiceAccount when the pod leaves it unset."""
    if "automountServiceAccountToken" in spec or "serviceAccountName" not in spec:
        return
    for doc in docs:
        if doc["kind"] == "ServiceAccount" and doc["metadata"]["name"] == spec["serviceAccountName"]:
            if "automountServiceAccountToken" in doc:
                spec["automountServiceAccountToken"] = doc["automountServiceAccountToken"]


def _trainjob_pod(job: dict[str, Any]) -> dict[str, Any]:
    """The node pod of a TrainJob: the trainer section's container plus the runtime patch for node ``node``."""
    trainer = job["spec"]["trainer"]
    container: dict[str, Any] = {"name": "node", "image": trainer["image"]}
    for key in ("command", "args", "env"):
        if key in trainer:
            container[key] = copy.deepcopy(trainer[key])
    container["resources"] = copy.deepcopy(trainer.get("resourcesPerNode", {}))
    spec: dict[str, Any] = {}
    for patch in job["spec"].get("runtimePatches", []):
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if rjob["name"] != "node":
                continue
            pod = copy.deepcopy(rjob["template"]["spec"]["template"]["spec"])
            for patched in pod.pop("containers", []):
                if patched["name"] == "node":
                    container |= {k: v for k, v in patched.items() if k != "name"}
            spec |= pod
    return spec | {"containers": [container]}


def with_pods(docs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """``docs`` plus a Pod for each pod kfkit's custom resources become, and each pod's source kind by name."""
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] in ("ServingRuntime", "ClusterServingRuntime")}
    pods: list[dict[str, Any]] = []
    sources: dict[str, str] = {}

    def add(source: str, name: str, doc: dict[str, Any], labels: dict[str, str] | None, spec: dict[str, Any]):
        pod_name = f"{source.lower()}-{name}"
        # a ClusterServingRuntime's pods run in the InferenceService's namespace, the release's
        pods.append(_pod(pod_name, doc["metadata"].get("namespace", "kfkit"), labels, spec, doc))
        sources[pod_name] = source

    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "Pod":
            is_test = doc["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"
            sources[name] = HELM_TEST if is_test else "Pod"
        elif kind in ("ServingRuntime", "ClusterServingRuntime"):
            add("ServingRuntime", name, doc, doc["spec"].get("labels"), _pick(doc["spec"]))
        elif kind == "Service" and doc["apiVersion"] == "serving.knative.dev/v1":
            template = doc["spec"]["template"]
            add(KNATIVE, name, doc, template["metadata"].get("labels"), copy.deepcopy(template["spec"]))
        elif kind == "InferenceService":
            predictor = doc["spec"]["predictor"]
            runtime = runtimes[predictor["model"]["runtime"]]  # every set that has one renders its runtime
            spec = _with_model(runtime["spec"], predictor)
            _effective_token_mount(spec, docs)
            add(kind, name, doc, doc["metadata"].get("labels"), spec)
        elif kind == "PyTorchJob":
            for replica, replica_spec in doc["spec"]["pytorchReplicaSpecs"].items():
                template = replica_spec["template"]
                labels = template.get("metadata", {}).get("labels")
                add(kind, f"{name}-{replica.lower()}", doc, labels, copy.deepcopy(template["spec"]))
        elif kind == "TrainJob":
            add(kind, f"{name}-node", doc, doc["metadata"].get("labels"), _trainjob_pod(doc))
    return docs + pods, sources


# --- checkov -----------------------------------------------------------------------------------------------


def checkov(folder: Path) -> dict[str, Any]:
    """checkov's Kubernetes framework on every YAML file in ``folder``, offline; its JSON report."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder), "LANG": "C.UTF-8"}
    result = run(
        CHECKOV, "--directory", folder, "--framework", "kubernetes", "--skip-download", "--compact",
        "--output", "json", "--soft-fail",
        cwd=folder, env=env,  # no repo or home .checkov.yaml can change what runs
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(result.stdout)
    if isinstance(report, dict) and "check_type" not in report and report.get("resource_count") == 0:
        # checkov's report when it found no resource it knows: the bare summary
        empty: dict[str, list] = {"passed_checks": [], "failed_checks": [], "skipped_checks": [], "parsing_errors": []}
        report = {"check_type": "kubernetes", "summary": report, "results": empty}
    assert isinstance(report, dict) and report.get("check_type") == "kubernetes", result.stdout[:500]
    return report


def scan(
    folder: Path, sets: dict[str, list[dict[str, Any]]], *, bare: frozenset[str] = frozenset()
) -> dict[str, SetResult]:
    """Write each set (with its pods, unless named in ``bare``) to ``folder/<set>.yaml``, run checkov once,
    and split the results by set."""
    sources: dict[str, dict[str, str]] = {}
    for name, docs in sets.items():
        all_docs, sources[name] = (docs, {}) if name in bare else with_pods(docs)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump_all(all_docs, sort_keys=False))
    report = checkov(folder)
    assert report["summary"]["parsing_errors"] == 0, report["results"]["parsing_errors"]
    results = {name: SetResult() for name in sets}
    for outcome in ("passed", "failed", "skipped"):
        for r in report["results"][f"{outcome}_checks"]:
            name = Path(r["file_path"]).stem
            kind, _, resource = r["resource"].split(".", 2)
            source = sources[name].get(resource, kind) if kind == "Pod" else kind
            reason = (r.get("check_result") or {}).get("suppress_comment") or ""
            finding = Finding(r["check_id"], r["check_name"], r["resource"], source, reason)
            getattr(results[name], outcome).append(finding)
    return results


@pytest.fixture(scope="module")
def results(tools, tmp_path_factory) -> dict[str, SetResult]:
    results = scan(tmp_path_factory.mktemp("checkov"), render_sets(tools))
    print("\ncheckov per rendered set (failed = skipped + pending + unexpected):")
    for name, result in results.items():
        split = {k: len(v) for k, v in result.classify().items()}
        print(f"  {name:34} passed {len(result.passed):4}  failed {len(result.failed):3}  {split}  "
              f"skipped in the manifests {len(result.skipped):3}")  # fmt: skip
    return results


# --- tests -------------------------------------------------------------------------------------------------

SET_NAMES = [f"chart-{s.removesuffix('-values.yaml')}" for s in SCENARIOS] + ["kustomize-base"]
SET_NAMES += [f"training-{c}-{k}" for c in TRAINING_CONFIGS for k in JOB_KINDS]


@pytest.mark.parametrize("name", SET_NAMES)
def test_no_unexpected_failed_checks(results, name):
    unexpected = results[name].classify()["unexpected"]
    assert not unexpected, "\n".join(f"{f.check} {f.name}: {f.resource} (from {f.source})" for f in unexpected)


CHART_SETS = [n for n in SET_NAMES if n.startswith("chart-")]


@pytest.mark.parametrize("name", CHART_SETS)
def test_chart_scenarios_fail_no_check(results, name):
    """0 failed checks on every chart scenario: what the chart accepts is skipped in the chart, with why."""
    failed = results[name].failed
    assert not failed, "\n".join(f"{f.check} {f.name}: {f.resource} (from {f.source})" for f in failed)
    assert results[name].passed
    for f in results[name].skipped:
        assert len(f.reason) > 40, f"{name}: {f.check} on {f.resource} is skipped without a reason"


def test_the_full_scenario_scans_every_workload(results):
    """Each of the full scenario's workloads got the container checks: Deployments, the Knative detector, the
    runtime's pod (a ClusterServingRuntime), the predictor and the test pod."""
    scanned = {(f.source, f.resource.split(".", 2)[2]) for f in results["chart-full"].passed if f.check == PRIVILEGED}
    deployments = {r for s, r in scanned if s == "Deployment"}
    assert deployments == {"kfkit-retrain", "kfkit-feast", "kfkit-redis", "kfkit-s3"}, scanned
    assert {s for s, _ in scanned} >= {KNATIVE, "ServingRuntime", "InferenceService", HELM_TEST}, scanned


@pytest.mark.parametrize("name", SET_NAMES)
def test_every_pod_is_scanned(results, name):
    """The container checks really ran on every pod a set's resources become (not just on the CRDs' shells)."""
    privileged = [f for f in results[name].passed if f.check == PRIVILEGED]
    failed_privileged = [f for f in results[name].failed if f.check == PRIVILEGED]
    assert not failed_privileged
    scanned = {f.source for f in privileged}
    if name.startswith("training-"):
        assert scanned == {"PyTorchJob"} if name.endswith("pytorchjob") else scanned == {"TrainJob"}
    else:
        assert {"ServingRuntime"} <= scanned
    if name in ("chart-with-isvc", "chart-scale-to-zero", "kustomize-base"):
        assert "InferenceService" in scanned
    if name == "chart-with-isvc":
        assert HELM_TEST in scanned


def test_skips_and_pending_are_all_still_needed(results):
    """Each skip and pending entry matches a real failure somewhere: the lists cannot quietly go stale."""
    failed = [f for r in results.values() for f in r.failed]
    by_check = {f.check for f in failed}
    by_source = {(f.source, f.check) for f in failed}
    assert set(SKIPS) <= by_check, f"skips that no longer fail: {sorted(set(SKIPS) - by_check)}"
    stale = sorted(set(SOURCE_SKIPS) - by_source)
    assert not stale, f"source skips that no longer fail: {stale}"
    fixed = sorted(set(PENDING) - by_source)
    assert not fixed, f"pending findings now pass, delete them from PENDING: {fixed}"


def test_a_pinned_digest_passes_the_image_checks(results):
    """CKV_K8S_43 and CKV_K8S_15 are skipped only for tag defaults: the pinned-digest scenario passes both."""
    passed = {(f.source, f.check) for f in results["chart-with-isvc"].passed}
    for source in SERVING:
        assert {(source, "CKV_K8S_43"), (source, "CKV_K8S_15")} <= passed, source


def test_skip_reasons_are_given():
    for reason in [*SKIPS.values(), *SOURCE_SKIPS.values(), *PENDING.values()]:
        assert len(reason) > 40


BAD_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "bad", "namespace": "kfkit"},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "securityContext": {"privileged": True}}]},
}


def _bad_runtime() -> dict[str, Any]:
    containers = copy.deepcopy(BAD_POD["spec"]["containers"])
    return {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime",
        "metadata": {"name": "bad", "namespace": "kfkit"},
        "spec": {"supportedModelFormats": [{"name": "kfkit"}], "containers": containers},
    }


@pytest.fixture(scope="module")
def bad_results(tools, tmp_path_factory) -> dict[str, SetResult]:
    sets = {"bad-pod": [BAD_POD], "bad-runtime": [_bad_runtime()], "bad-runtime-bare": [_bad_runtime()]}
    return scan(tmp_path_factory.mktemp("checkov-bad"), sets, bare=frozenset({"bad-runtime-bare"}))


def test_checkov_fails_a_privileged_container(bad_results):
    """The scan can fail: a privileged container fails CKV_K8S_16, as a Pod and inside a ServingRuntime."""
    for name, source in (("bad-pod", "Pod"), ("bad-runtime", "ServingRuntime")):
        failed = {(f.source, f.check) for f in bad_results[name].failed}
        assert (source, PRIVILEGED) in failed, name
        assert bad_results[name].classify()["unexpected"], name


def test_checkov_alone_does_not_see_inside_custom_resources(bad_results):
    """Why the pods are built: the same privileged ServingRuntime, scanned bare, gets no check at all."""
    assert (bad_results["bad-runtime-bare"].passed, bad_results["bad-runtime-bare"].failed) == ([], [])
