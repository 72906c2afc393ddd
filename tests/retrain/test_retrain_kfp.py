"""Retrain runs on a cluster: the real kfp.Client against a scripted Kubeflow Pipelines v2beta1 API server."""

import json
import time

import pytest
from retrain_events import MODEL, drift_event

from kfkit.registry import open_registry
from kfkit.retrain.trigger import Trigger


@pytest.fixture
def production(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    (source / "model.json").write_text(json.dumps({"feature_names": ["mean_radius", "mean_texture", "x"]}))
    registry = open_registry(f"file://{tmp_path / 'registry'}")
    registry.publish(source, name=MODEL)
    registry.promote(MODEL, "1", alias="production")
    return registry, source


def _fire(tmp_path, retrain_config, scenario, *overrides):
    cfg, base = retrain_config(
        "retrain.min_drifted=2",
        "retrain.window_span=3",
        f"retrain.kfp_host={scenario.url}",
        "retrain.kfp_poll_s=1",
        *overrides,
    )
    trigger = Trigger(cfg, base, tmp_path / "state")
    assert trigger.launcher.mode == "kfp"
    answers = [trigger.handle(*drift_event(w))["action"] for w in range(2)]
    assert answers == ["hold", "retrain"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = trigger.status()["runs"][0]
        if run["state"] != "running":
            return trigger, run
        time.sleep(0.2)
    raise AssertionError(trigger.status()["runs"])


def _created_run(scenario) -> dict:
    (body,) = [body for method, path, body in scenario.requests if (method, path) == ("POST", "/apis/v2beta1/runs")]
    return body


def test_a_kfp_run_carries_the_reason_and_a_passing_gate_promotes(tmp_path, retrain_config, kfp_scenario, production):
    registry, source = production
    with kfp_scenario("SUCCEEDED") as scenario:
        # what the pipeline's publish step does on the cluster once the gate passed
        scenario.on_finish = lambda run: registry.promote(MODEL, registry.publish(source, name=MODEL).version)
        trigger, run = _fire(tmp_path, retrain_config, scenario)
        body = _created_run(scenario)
    assert (run["state"], run["mode"], run["version"], run["production_before"]) == ("promoted", "kfp", "2", "1")
    assert run["kfp_run_id"] in scenario.runs and run["log"].endswith(f"/#/runs/details/{run['kfp_run_id']}")
    # the reason is a run parameter (config.retrain.reason), beside the rest of the config
    config = body["runtime_config"]["parameters"]["config"]
    assert config["retrain"]["reason"] == run["reason"]
    assert run["reason"].startswith("drift in 2 of the last 3 windows (windows 0, 1) of breast-cancer-mlp/1 (data)")
    assert config["model"]["name"] == MODEL and config["dataset"]["kind"] == "breast_cancer"
    assert body["pipeline_spec"]["pipelineInfo"]["name"] == "kfkit-training"
    assert body["display_name"].startswith(f"retrain-{MODEL}-1-")
    (experiment,) = scenario.experiments.values()
    assert body["experiment_id"] == experiment["experiment_id"] and experiment["display_name"] == "kfkit-retrain"
    assert trigger.audit.read()[-1]["kfp_run_id"] == run["kfp_run_id"]


def test_a_kfp_run_stopped_by_the_gate_leaves_production(tmp_path, retrain_config, kfp_scenario, production):
    registry, _ = production
    with kfp_scenario("FAILED", failed_task="gate") as scenario:
        _, run = _fire(tmp_path, retrain_config, scenario)
    assert run["state"] == "gate_failed" and run["version"] is None
    assert run["gate"] == "gate rejected breast-cancer-mlp: roc_auc 0.51 < floor 0.8"
    assert run["production_before"] == run["production_after"] == "1"
    assert registry.aliases(MODEL) == {"production": "1"}


def test_a_kfp_run_failing_elsewhere_is_a_failure(tmp_path, retrain_config, kfp_scenario, production):
    with kfp_scenario("FAILED", failed_task="train") as scenario:
        _, run = _fire(tmp_path, retrain_config, scenario)
    assert run["state"] == "failed" and "ended FAILED" in run["gate"]


def test_an_uploaded_pipeline_version_is_run_by_reference(tmp_path, retrain_config, kfp_scenario, production):
    with kfp_scenario("SUCCEEDED") as scenario:
        _, run = _fire(tmp_path, retrain_config, scenario, "retrain.kfp_pipeline_id=p-1", "retrain.kfp_version_id=v-7")
        body = _created_run(scenario)
    assert body["pipeline_version_reference"] == {"pipeline_id": "p-1", "pipeline_version_id": "v-7"}
    assert "pipeline_spec" not in body or body["pipeline_spec"] is None
    assert body["runtime_config"]["parameters"]["config"]["retrain"]["reason"] == run["reason"]
    assert run["state"] == "published"  # succeeded, but nothing moved the alias in this scenario


def test_an_unreachable_kfp_api_is_recorded_not_raised(tmp_path, retrain_config, free_port):
    cfg, base = retrain_config(
        "retrain.min_drifted=1", "retrain.window_span=1", f"retrain.kfp_host=http://127.0.0.1:{free_port()}"
    )
    trigger = Trigger(cfg, base, tmp_path / "state")
    assert trigger.handle(*drift_event(0))["action"] == "retrain"
    deadline = time.monotonic() + 30
    while trigger.status()["runs"][0]["state"] == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    run = trigger.status()["runs"][0]
    assert run["state"] == "failed" and run["gate"].startswith("could not start the KFP run")
    assert trigger.status()["running"] is None
