"""Deploy to KServe with the real kubernetes client over HTTP against the scenario API server: server-side
apply, Ready of the applied generation, failures named by cause, timeouts, dry run, the kfp component."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from deploy_support import GIT_COMMIT
from kube_scenario import Scenario

from kfkit.deploy.inference_service import to_yaml
from kfkit.deploy.kserve import Cluster, build_objects, deploy_version
from kfkit.errors import ConfigError, DeployError

REPO = Path(__file__).resolve().parents[2]
NAME = "breast-cancer-mlp"


def deploy(world, server, version, **kwargs):
    return deploy_version(world.cfg, name=NAME, ref=version, cluster=Cluster(server.client()), poll_s=0.01,
                          log=lambda _line: None, **kwargs)  # fmt: skip


def isvc_gets(server) -> int:
    return sum(1 for r in server.requests if r["method"] == "GET" and r["path"].endswith(f"/inferenceservices/{NAME}"))


def test_apply_is_server_side_and_waits_for_the_applied_generation(world):
    server = world.start(Scenario(ready_after=3))
    first = deploy(world, server, "1")
    assert (first.version, first.generation) == ("1", 1)
    patches = [r for r in server.requests if r["method"] == "PATCH"]
    assert [p["path"].rsplit("/", 2)[-2] for p in patches] == ["servingruntimes", "inferenceservices"]
    for patch in patches:
        assert patch["content_type"] == "application/apply-patch+yaml"
        assert patch["query"] == {"fieldManager": "kfkit", "fieldValidation": "Strict", "force": "true"}
    live = server.objects[("inferenceservices", "kfkit", NAME)]
    assert [m["manager"] for m in live["metadata"]["managedFields"]] == ["kfkit"]
    assert live["metadata"]["labels"]["kfkit.io/model-version"] == "1"
    annotations = live["metadata"]["annotations"]
    assert annotations["kfkit.io/git-commit"] == GIT_COMMIT
    assert annotations["kfkit.io/registry-uri"] == world.registry.uri
    assert annotations["kfkit.io/model-uri"] == world.registry.get(NAME, "1").uri
    assert annotations["kfkit.io/pipeline-run-id"] == "run-1"
    assert len(annotations["kfkit.io/manifest-sha256"]) == 64

    before = isvc_gets(server)
    second = deploy(world, server, "2")
    # The status said Ready (of generation 1) for the first polls: only generation 2's Ready ended the wait.
    assert second.generation == 2 and isvc_gets(server) - before == 3
    assert server.objects[("inferenceservices", "kfkit", NAME)]["status"]["observedGeneration"] == 2
    assert world.registry.aliases(NAME) == {"production": "2"}
    moves = [(e.action, e.alias, e.from_version, e.to_version) for e in world.registry.audit(NAME) if e.alias]
    assert moves == [("promote", "production", None, "1"), ("promote", "production", "1", "2")]
    assert "InferenceService kfkit/breast-cancer-mlp (generation 2)" in world.registry.audit(NAME)[-1].reason
    assert second.endpoint()["v2_url"] == f"http://{NAME}.kfkit.svc.cluster.local:80/v2/models/{NAME}/infer"


def test_reapplying_the_same_spec_keeps_the_generation(world):
    server = world.start()
    assert deploy(world, server, "1").generation == 1
    assert deploy(world, server, "1").generation == 1  # nothing changed: no new revision, no alias move
    assert [e.action for e in world.registry.audit(NAME)].count("promote") == 1


def test_fields_kfkit_stops_setting_are_removed_and_other_managers_fields_kept(world):
    server = world.start(None, "deploy.logger_url=http://kfkit-drift.kfkit.svc.cluster.local:8090")
    deploy(world, server, "1")
    key = ("inferenceservices", "kfkit", NAME)
    assert server.objects[key]["spec"]["predictor"]["logger"]["url"].startswith("http://kfkit-drift")
    # Another manager (a person with kubectl) adds an annotation kfkit does not set.
    other = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
             "metadata": {"name": NAME, "namespace": "kfkit", "annotations": {"team": "fraud"}}}  # fmt: skip
    server.client().call_api(f"/apis/serving.kserve.io/v1beta1/namespaces/kfkit/inferenceservices/{NAME}", "PATCH",
                             query_params=[("fieldManager", "kubectl")], body=other,
                             header_params={"Content-Type": "application/apply-patch+yaml"})  # fmt: skip
    world.cfg = replace(world.cfg, deploy=replace(world.cfg.deploy, logger_url=None))
    deploy(world, server, "1")
    live = server.objects[key]
    assert "logger" not in live["spec"]["predictor"]
    assert live["metadata"]["annotations"]["team"] == "fraud"
    assert {m["manager"] for m in live["metadata"]["managedFields"]} == {"kfkit", "kubectl"}


@pytest.mark.parametrize(
    ("failure", "cause", "detail"),
    [
        ("image-pull", "image pull", 'Back-off pulling image "ghcr.io/kfkit/kfkit:no-such-tag"'),
        ("storage-initializer", "storage initializer", "AccessDenied"),
        ("quota", "quota", "exceeded quota: compute"),
        ("crash", "model server exited", "kfkit.errors.ModelLoadError: no model.json"),
        ("model-load", "model load", "ModelLoadFailed: model.safetensors: sha256 mismatch"),
    ],
)
def test_a_failing_revision_names_its_cause(world, failure, cause, detail):
    server = world.start(Scenario(failures={"2": failure}))
    deploy(world, server, "1")
    with pytest.raises(DeployError) as raised:
        deploy(world, server, "2")
    message = str(raised.value)
    assert message.startswith(f"InferenceService kfkit/{NAME} generation 2 failed: {cause}: ")
    assert detail in message
    assert f"revision {NAME}-predictor-00002" in message
    if failure not in ("quota", "model-load"):
        assert f"pod {NAME}-predictor-00002-deployment-7d9c-x2" in message
    assert world.registry.aliases(NAME) == {"production": "1"}  # the alias still names what serves
    assert [e.to_version for e in world.registry.audit(NAME) if e.action == "promote"] == ["1"]


def test_a_revision_that_never_gets_ready_times_out_naming_readiness(world):
    server = world.start(Scenario(failures={"1": "readiness"}))
    world.cfg = replace(world.cfg, deploy=replace(world.cfg.deploy, timeout_s=0.5))
    with pytest.raises(DeployError) as raised:
        deploy(world, server, "1")
    message = str(raised.value)
    assert f"InferenceService kfkit/{NAME} generation 1 was not Ready within deploy.timeout_s=0.5s" in message
    assert "readiness: running but not ready" in message and "INFO still loading" in message
    assert world.registry.aliases(NAME) == {}


def test_timeout_reports_the_last_status(world):
    server = world.start(Scenario(never_ready=True))
    world.cfg = replace(world.cfg, deploy=replace(world.cfg.deploy, timeout_s=0.3))
    expected = (
        r"not Ready within deploy.timeout_s=0.3s \(last status: observedGeneration 1; Ready=Unknown \(Deploying\)\)"
    )
    with pytest.raises(DeployError, match=expected):
        deploy(world, server, "1")


def test_a_refused_object_names_the_api_servers_message(world):
    server = world.start()
    world.cfg = replace(world.cfg, deploy=replace(world.cfg.deploy, mode="standard", autoscaling_metric="cpu"))
    docs = build_objects(world.cfg, world.registry, world.registry.get(NAME, "1"))
    docs[-1]["spec"]["predictor"]["minReplica"] = 1  # a typo the strict apply refuses
    from kfkit.deploy.kserve import apply_all

    with pytest.raises(DeployError, match=r'could not apply InferenceService kfkit/breast-cancer-mlp: 400 .*'
                       r'\.spec\.predictor\.minReplica: field not declared in schema'):  # fmt: skip
        apply_all(Cluster(server.client()), docs)


def test_no_cluster_is_a_config_error(world, monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    world.cfg = world.configure()
    with pytest.raises(ConfigError, match="no Kubernetes cluster to deploy to: not in a pod"):
        deploy_version(world.cfg, name=NAME, ref="1", log=lambda _line: None)


def test_a_local_registry_cannot_feed_a_cluster(tmp_path):
    from kfkit.config import compose
    from kfkit.registry import open_registry

    registry = open_registry(f"file://{tmp_path}/reg")
    from deploy_support import publish_versions

    publish_versions(registry, NAME, 1, tmp_path)
    cfg = compose(["deploy=kserve", f"registry.uri=file://{tmp_path}/reg"])
    with pytest.raises(ConfigError, match="publish the version to an S3 registry first"):
        deploy_version(cfg, name=NAME, ref="1", dry_run=True)


def _kfkit(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kfkit.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **env}, timeout=120)  # fmt: skip


def test_dry_run_prints_exactly_what_would_be_applied(world, tmp_path):
    overrides = ["registry=s3", f"registry.uri={world.registry.uri}", f"registry.endpoint={world.endpoint}"]
    result = _kfkit("deploy", "--dry-run", "--version", "2", *overrides, env={"KUBECONFIG": str(tmp_path / "none")})
    assert result.returncode == 0, result.stderr
    expected = build_objects(world.configure(), world.registry, world.registry.get(NAME, "2"))
    assert result.stdout == to_yaml(expected)
    assert [d["kind"] for d in yaml.safe_load_all(result.stdout)] == ["ServingRuntime", "InferenceService"]


def test_deploy_cli_applies_through_the_kubeconfig(world, tmp_path):
    server = world.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "scenario",
        "clusters": [{"name": "scenario", "cluster": {"server": server.url}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "scenario", "context": {"cluster": "scenario", "user": "me"}}],
    }))  # fmt: skip
    overrides = ["registry=s3", f"registry.uri={world.registry.uri}", f"registry.endpoint={world.endpoint}"]
    result = _kfkit("deploy", "--json", "--version", "1", *overrides, env={"KUBECONFIG": str(kubeconfig)})
    assert result.returncode == 0, result.stderr
    endpoint = json.loads(result.stdout)
    assert endpoint["version"] == "1" and endpoint["url"] == f"http://{NAME}.kfkit.example.com"
    assert world.registry.aliases(NAME) == {"production": "1"}


def test_deploy_cli_failure_is_one_line_with_exit_1(world, tmp_path):
    server = world.start(Scenario(failures={"1": "image-pull"}))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "s",
        "clusters": [{"name": "s", "cluster": {"server": server.url}}], "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}],
    }))  # fmt: skip
    overrides = ["registry=s3", f"registry.uri={world.registry.uri}", f"registry.endpoint={world.endpoint}"]
    result = _kfkit("deploy", "--version", "1", *overrides, env={"KUBECONFIG": str(kubeconfig)})
    assert result.returncode == 1
    failed = "kfkit deploy: error: InferenceService kfkit/breast-cancer-mlp generation 1 failed: image pull"
    assert failed in result.stderr
    assert "Traceback" not in result.stderr


def test_kfp_component_deploys_to_kserve(world, tmp_path, monkeypatch):
    from kfp.dsl import Artifact

    from kfkit.components.deploy import deploy as deploy_component
    from kfkit.config import to_dict

    server = world.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "s",
        "clusters": [{"name": "s", "cluster": {"server": server.url}}], "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "s", "context": {"cluster": "s", "user": "u"}}],
    }))  # fmt: skip
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    endpoint = Artifact(uri=str(tmp_path / "endpoint"))
    model_uri = world.registry.get(NAME, "3").uri
    deploy_component.python_func(config=to_dict(world.cfg), model_uri=model_uri, endpoint=endpoint)
    live = json.loads((tmp_path / "endpoint").read_text())
    assert live["version"] == "3" and live["pid"] == 0 and live["model_name"] == NAME
    assert endpoint.metadata["generation"] == 1
    assert world.registry.aliases(NAME) == {"production": "3"}
    from kfkit.deploy.local import LocalEndpoint

    assert LocalEndpoint.from_dict(live).v2_url == live["v2_url"]  # the smoke test reads it as it reads a local one
