"""A retrain run on a cluster goes through kfkit's one kfp.Client auth and compiles the one pipeline definition."""

import threading

import yaml
from kfp_recorder import KfpRecorder

from kfkit.config import compose
from kfkit.retrain.launch import KfpLauncher, RunRecord

REASON = "drift in 3 of the last 5 windows of breast-cancer-mlp/1 (data)"


def test_a_retrain_run_uses_the_token_file_the_namespace_and_the_same_pipeline(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KFKIT_KFP_TOKEN", raising=False)
    (tmp_path / "token").write_text("retrain-token\n")
    with KfpRecorder(multi_user=True) as api:
        overrides = [
            f"work_dir={tmp_path / 'work'}",
            f"registry.uri=file://{tmp_path / 'registry'}",
            f"retrain.kfp_host={api.url}",
            "retrain.kfp_poll_s=0.05",
            "kubeflow.namespace=team-a",
            f"kubeflow.token_file={tmp_path / 'token'}",
            "kubeflow.service_account=pipeline-runner",
            "images.tag=3.1.4",
        ]
        launcher = KfpLauncher(compose(overrides), overrides, tmp_path / "state")
        ended = threading.Event()
        record = RunRecord(run=1, reason=REASON, decision={})
        launcher.start(record, lambda _: ended.set())
        assert ended.wait(60), record
    assert record.state == "published", record.gate
    assert {c.authorization for c in api.calls} == {"Bearer retrain-token"}
    (experiment,) = api.experiments.values()
    assert (experiment["display_name"], experiment["namespace"]) == ("kfkit-retrain", "team-a")
    (run,) = api.called("POST", "/runs")
    assert run.body["service_account"] == "pipeline-runner"
    assert run.body["runtime_config"]["parameters"]["config"]["retrain"]["reason"] == REASON
    spec = run.body["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "kfkit-training"
    # the package it compiled is the same definition, its pods set up from the same config
    compiled = next(yaml.safe_load_all((tmp_path / "state" / "runs" / "run-1.yaml").read_text()))
    assert spec["root"]["dag"] == compiled["root"]["dag"]
    assert {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()} == {
        "ghcr.io/kfkit/kfkit:3.1.4"
    }
    assert spec["root"]["dag"]["tasks"]["train"]["retryPolicy"]["maxRetryCount"] == 2
