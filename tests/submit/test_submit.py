"""``kfkit submit`` driving the real kfp.Client against a recording KFP v2beta1 API on 127.0.0.1.

Each test checks the calls' bodies and Authorization headers: upload of the pipeline or a new version of it,
the experiment, the run or the recurring run, and (``--watch``) the reads of the run to its end.
"""

import pytest
import yaml
from kfp_recorder import KfpRecorder

from kfkit.cli import main

S3 = ["registry=s3", "registry.uri=s3://kfkit-models/team-a"]
TOKEN = "eyJhbGciOiJSUzI1NiJ9.outside-token"


@pytest.fixture(autouse=True)
def _clean_env(tmp_path, monkeypatch):
    """No kfp context file, token or endpoint from the machine running the tests."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("KFKIT_KFP_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH", "KF_PIPELINES_ENDPOINT", "KF_PIPELINES_UI_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KFKIT_GIT_COMMIT", "0123456789abcdef0123456789abcdef01234567")
    # where kfp looks for the projected token: nothing there unless a test puts it there
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "no-projected-token"))


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


def submit(*args: str) -> int:
    return main(["submit", *args])


def test_submit_uploads_the_pipeline_and_starts_a_run_with_a_token_from_a_file(token_file, capsys):
    with KfpRecorder() as api:
        code = submit("--host", api.url, "--token-file", str(token_file), *S3, "training.epochs=4")
    out = capsys.readouterr().out
    assert code == 0, out
    assert {c.authorization for c in api.calls} == {f"Bearer {TOKEN}"}  # every call, healthz included
    (upload,) = api.called("POST", "/pipelines/upload")
    assert upload.query["name"] == "kfkit-training" and "namespace" not in upload.query
    assert upload.query["description"] == "git commit 0123456789abcdef0123456789abcdef01234567"
    spec, *_ = yaml.safe_load_all(upload.body["uploadfile"])
    assert spec["pipelineInfo"]["name"] == "kfkit-training"
    (pipeline,) = api.pipelines.values()
    (version,) = api.versions[pipeline["pipeline_id"]]
    (run,) = api.called("POST", "/runs")
    assert run.body["pipeline_version_reference"] == {
        "pipeline_id": pipeline["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    assert "pipeline_spec" not in run.body  # the run is of the uploaded version, not a second copy
    config = run.body["runtime_config"]["parameters"]["config"]
    assert config["registry"]["uri"] == "s3://kfkit-models/team-a" and config["training"]["epochs"] == 4
    (experiment,) = api.experiments.values()
    assert experiment["display_name"] == "kfkit" and run.body["experiment_id"] == experiment["experiment_id"]
    assert run.body["display_name"].startswith("breast-cancer-mlp-")
    (run_id,) = api.runs
    assert f"{api.url}/#/runs/details/{run_id}" in out
    assert not api.called("GET", f"/runs/{run_id}")  # no --watch: submit returns at once


def test_submit_sends_what_kfkit_compile_writes_and_the_one_parameter_mapping(token_file, tmp_path, capsys):
    """One config -> parameters mapping for kfp.local, compile and submit: the same package, the same arguments."""
    from kfkit.config import compose
    from kfkit.pipelines.parameters import pipeline_arguments

    overrides = [*S3, "training=gpu", "kubeflow.s3_secret=kfkit-s3"]
    assert main(["compile", "-o", str(tmp_path / "compiled.yaml"), *overrides]) == 0
    with KfpRecorder() as api:
        assert submit("--host", api.url, "--token-file", str(token_file), *overrides) == 0
    (upload,) = api.called("POST", "/pipelines/upload")
    compiled = list(yaml.safe_load_all((tmp_path / "compiled.yaml").read_text()))
    assert list(yaml.safe_load_all(upload.body["uploadfile"])) == compiled
    assert len(compiled) == 2  # the pipeline and its kubernetes platform spec (GPU placement, secrets)
    (run,) = api.called("POST", "/runs")
    assert run.body["runtime_config"]["parameters"] == pipeline_arguments(compose(overrides))


def test_a_second_submit_uploads_a_new_version_of_the_same_pipeline(token_file, capsys):
    with KfpRecorder() as api:
        assert submit("--host", api.url, "--token-file", str(token_file), *S3) == 0
        assert submit("--host", api.url, "--token-file", str(token_file), *S3, "--version-name", "v2") == 0
    (pipeline,) = api.pipelines.values()  # one named pipeline
    assert len(api.called("POST", "/pipelines/upload")) == 1
    (upload_version,) = api.called("POST", "/pipelines/upload_version")
    assert upload_version.query == {
        "name": "v2",
        "pipelineid": pipeline["pipeline_id"],
        "description": "git commit 0123456789abcdef0123456789abcdef01234567",
    }
    first, second = api.called("POST", "/runs")
    assert (
        second.body["pipeline_version_reference"]["pipeline_version_id"]
        == api.versions[pipeline["pipeline_id"]][1]["pipeline_version_id"]
    )
    assert first.body["experiment_id"] == second.body["experiment_id"]  # the experiment is found, not duplicated
    assert len(api.experiments) == 1
    assert "version v2" in capsys.readouterr().out


def test_in_a_pod_the_projected_service_account_token_is_sent(tmp_path, monkeypatch, capsys):
    projected = tmp_path / "projected" / "token"
    projected.parent.mkdir()
    projected.write_text("projected-sa-token")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(projected))
    with KfpRecorder(multi_user=True) as api:
        code = submit("--host", api.url, "--namespace", "team-a", "--experiment", "nightly", *S3)
    assert code == 0, capsys.readouterr().err
    assert {c.authorization for c in api.calls} == {"Bearer projected-sa-token"}
    (upload,) = api.called("POST", "/pipelines/upload")
    assert upload.query["namespace"] == "team-a"
    (experiment,) = api.experiments.values()
    assert (experiment["display_name"], experiment["namespace"]) == ("nightly", "team-a")


def test_the_projected_token_is_read_again_on_each_call(tmp_path, monkeypatch, capsys):
    """The kubelet rotates the projected token (hourly by default): a long --watch must send the new one."""
    projected = tmp_path / "token"
    projected.write_text("first")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(projected))
    with KfpRecorder() as api:
        api.on_run_read = lambda run: projected.write_text("rotated")
        code = submit("--host", api.url, "--watch", *S3, "kubeflow.poll_s=0.05", "kubeflow.auth=in_pod")
    assert code == 0, capsys.readouterr().err
    (run_id,) = api.runs
    first_read, second_read = api.called("GET", f"/runs/{run_id}")
    assert api.called("POST", "/runs")[0].authorization == first_read.authorization == "Bearer first"
    assert second_read.authorization == "Bearer rotated"


def test_a_multi_user_kfp_needs_a_namespace(token_file, capsys):
    with KfpRecorder(multi_user=True) as api:
        code = submit("--host", api.url, "--token-file", str(token_file), *S3)
    assert code == 2
    assert "multi-user: name your profile namespace with --namespace" in capsys.readouterr().err
    assert not api.called("POST", "/pipelines/upload") and not api.called("POST", "/runs")


@pytest.mark.parametrize(("outcome", "code"), [("SUCCEEDED", 0), ("FAILED", 1)])
def test_watch_follows_the_run_and_exits_non_zero_on_failure(token_file, capsys, outcome, code):
    with KfpRecorder(outcome, failed_task="train") as api:
        status = submit("--host", api.url, "--token-file", str(token_file), "--watch", *S3, "kubeflow.poll_s=0.05")
    captured = capsys.readouterr()
    assert status == code, captured.err
    (run_id,) = api.runs
    assert len(api.called("GET", f"/runs/{run_id}")) == 2  # RUNNING, then the end
    assert f"run {run_id} RUNNING" in captured.out and f"run {run_id} {outcome}" in captured.out
    if outcome == "FAILED":
        assert f"kfkit submit: error: run {run_id} ended FAILED: train: torchrun exited with status 1" in captured.err


def test_a_recurring_run_from_config_replaces_the_previous_one_in_the_namespace(token_file, capsys):
    schedule = ["kubeflow.recurring.cron=0 0 3 * * *", "kubeflow.namespace=team-a"]
    with KfpRecorder(multi_user=True) as api:
        assert submit("--host", api.url, "--token-file", str(token_file), *S3, *schedule) == 0
        (first_id,) = api.recurring
        args = ("--host", api.url, "--token-file", str(token_file), "--version-name", "v2", *S3, *schedule)
        assert submit(*args) == 0
    assert not api.called("POST", "/runs")  # a schedule, not a run
    lists = api.called("GET", "/recurringruns")
    assert [c.query.get("namespace") for c in lists] == ["team-a", "team-a"]  # always explicit
    (deleted,) = api.called("DELETE", f"/recurringruns/{first_id}")
    (recurring,) = api.recurring.values()
    first, second = api.called("POST", "/recurringruns")
    body = second.body
    assert body["display_name"] == "kfkit-training-breast-cancer-mlp"
    assert body["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True and body["mode"] == "ENABLE"
    (pipeline,) = api.pipelines.values()
    newest = api.versions[pipeline["pipeline_id"]][-1]
    assert body["pipeline_version_reference"]["pipeline_version_id"] == newest["pipeline_version_id"]
    assert body["runtime_config"]["parameters"]["config"]["registry"]["uri"] == "s3://kfkit-models/team-a"
    assert f"replacing {first_id}" in capsys.readouterr().out


def test_an_interval_schedule_with_catchup(token_file):
    schedule = ["kubeflow.recurring.interval_s=3600", "kubeflow.recurring.catchup=true"]
    schedule += ["kubeflow.recurring.max_concurrency=2", "kubeflow.recurring.name=hourly"]
    with KfpRecorder() as api:
        assert submit("--host", api.url, "--token-file", str(token_file), *S3, *schedule) == 0
    (created,) = api.called("POST", "/recurringruns")
    assert created.body["trigger"] == {"periodic_schedule": {"interval_second": 3600}}
    assert created.body["no_catchup"] is False and int(created.body["max_concurrency"]) == 2
    assert created.body["display_name"] == "hourly"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "registry.uri=file://"),  # the pods cannot read this machine's folder
        (["--token-file", "/no/such/token", *S3], 2, "kubeflow.token_file=/no/such/token"),
        ([*S3, "kubeflow.auth=in_pod"], 2, "kubeflow.auth=in_pod but no projected token"),
        ([*S3, "kubeflow.recurring.cron=0 3 * * *"], 2, "has 5 fields; KFP's cron has 6"),
        (["--watch", *S3, "kubeflow.recurring.interval_s=600"], 2, "--watch follows one run"),
    ],
)
def test_bad_input_is_refused_before_anything_is_sent(args, code, message, capsys):
    with KfpRecorder() as api:
        status = submit("--host", api.url, *args)
    assert status == code
    assert message in capsys.readouterr().err
    assert not api.called("POST", "/pipelines/upload")


def test_no_host_and_an_unreachable_host(token_file, free_port, capsys):
    assert submit(*S3) == 2
    assert "no Kubeflow Pipelines host: pass --host URL or set kubeflow.host=URL" in capsys.readouterr().err
    url = f"http://127.0.0.1:{free_port()}"
    assert submit("--host", url, "--token-file", str(token_file), *S3, "kubeflow.auth=none") == 1
    assert f"cannot reach Kubeflow Pipelines at {url}" in capsys.readouterr().err


def test_help_says_how_to_authenticate(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["submit", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--watch" in text and "--token-file" in text and "audience pipelines.kubeflow.org" in text
