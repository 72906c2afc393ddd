"""The kfkit command line: help, one-line errors, compile and config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

KFKIT = [sys.executable, "-m", "kfkit.cli"]


def _kfkit(*args, cwd=REPO):
    return subprocess.run([*KFKIT, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def _assert_crd_valid(documents: str, tmp_path: Path) -> None:
    """Check YAML documents against the official CRD schemas in ../shared/crds."""
    crds = REPO.parent / "shared" / "crds"
    if not crds.is_dir():
        pytest.skip(f"missing tool: {crds} not found (CI clones the repo with shared/ beside it)")
    (tmp_path / "out.yaml").write_text(documents)
    check = subprocess.run(
        [sys.executable, str(crds / "validate.py"), "--crds", str(crds), str(tmp_path / "out.yaml")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr


def test_help_explains_each_command():
    for command, phrase in [
        ("run", "--no-serve"),
        ("serve", "--model-uri"),
        ("compile", "IR YAML"),
        ("config", "overrides"),
        ("registry", "promote"),
    ]:
        result = _kfkit(command, "--help")
        assert result.returncode == 0
        assert phrase in result.stdout
    assert "synthetic_fraud" in _kfkit("run", "--help").stdout  # config groups are listed
    assert "3 the gate rejected" in " ".join(_kfkit("run", "--help").stdout.split())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "training.epochz=3"], "epochz"),
        (["run", "training.epochs=abc"], "abc"),
        (["run", "dataset=csv", "dataset.path=/no/such/file.csv"], "/no/such/file.csv"),
        (["serve", "--model-uri", "file:///no/such/version"], "/no/such/version"),
        (["run", "+gate.min_metrics.rocauc=0.9"], "gate.min_metrics names ['rocauc']"),
        (["run", "gate.compare_metrics=[auc]"], "gate.compare_metrics names ['auc']"),
        (["run", "registry.uri=gs://bucket/models"], "'gs' is not supported"),
        (["run", "+gate.min_metrics.pr_auc=1.5"], "gate.min_metrics.pr_auc=1.5 can never be met"),
        (["run", "+gate.min_metrics.ece=-0.1"], "gate.min_metrics.ece=-0.1 can never be met"),
    ],
)
def test_bad_input_ends_with_one_clear_line(args, expected, tmp_path):
    result = _kfkit(*args, f"work_dir={tmp_path}" if args[0] == "run" else "--http-port=18080")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert lines[0].startswith(f"kfkit {args[0]}: error:")


def test_unwritable_registry_fails_before_training(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    result = _kfkit("run", f"registry.uri=file://{tmp_path}/a-file/registry", f"work_dir={tmp_path / 'work'}")
    assert result.returncode == 2, result.stderr
    assert f"registry.uri=file://{tmp_path}/a-file/registry is not writable" in result.stderr
    assert not (tmp_path / "work" / "pipeline_root").exists()


def test_busy_port_fails_before_training(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _kfkit("run", f"serving.http_port={port}", f"work_dir={tmp_path}")
    assert result.returncode != 0
    assert f"port {port}" in result.stderr
    assert "serving.http_port=" in result.stderr
    assert not (tmp_path / "pipeline_root").exists()


def test_config_prints_composed_values():
    result = _kfkit("config", "dataset=synthetic_fraud", "training.epochs=7")
    assert result.returncode == 0
    cfg = yaml.safe_load(result.stdout)
    assert cfg["training"]["epochs"] == 7
    assert cfg["model"]["name"] == "fraud-mlp"
    assert cfg["registry"]["uri"].startswith("file:///")


def test_compile_writes_ir_yaml(tmp_path):
    out = tmp_path / "pipeline.yaml"
    result = _kfkit("compile", "-o", str(out), "training.epochs=4", "registry=s3", "registry.uri=s3://models/team")
    assert result.returncode == 0, result.stderr
    spec = yaml.safe_load(out.read_text())
    assert spec["pipelineInfo"]["name"] == "kfkit-training"
    assert spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]["training"]["epochs"] == 4


def test_compile_refuses_this_machines_paths_unless_allowed(tmp_path):
    out = tmp_path / "pipeline.yaml"
    refused = _kfkit("compile", "-o", str(out))
    assert refused.returncode == 2 and not out.exists()
    assert "registry.uri=file://" in refused.stderr and "registry=s3" in refused.stderr
    allowed = _kfkit("compile", "-o", str(out), "--allow-local-paths")
    assert allowed.returncode == 0, allowed.stderr
    assert "warning: the pipeline's defaults hold this machine's paths" in allowed.stderr
    s3 = _kfkit("compile", "-o", str(out), "registry=s3", "registry.uri=s3://models/team")
    defaults = yaml.safe_load(out.read_text())["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert s3.returncode == 0 and "warning" not in s3.stderr
    assert defaults["work_dir"] == ".kfkit"  # relative: the pod's own working directory


def test_config_shows_empty_keys_as_null():
    cfg = yaml.safe_load(_kfkit("config").stdout)
    assert cfg["registry"]["endpoint"] is None and cfg["dataset"]["path"] is None
    assert "payload_log_url" in cfg["serving"] and cfg["serving"]["payload_log_url"] is None


def test_manifest_renders_crd_valid_kserve_resources(tmp_path):
    result = _kfkit("manifest", "--storage-uri", "s3://kfkit-models/fraud-mlp/3", "dataset=synthetic_fraud")
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["ServingRuntime", "InferenceService"]
    isvc = docs[1]
    assert isvc["metadata"]["name"] == "fraud-mlp"
    assert isvc["spec"]["predictor"]["model"]["storageUri"] == "s3://kfkit-models/fraud-mlp/3/"  # with the slash
    _assert_crd_valid(result.stdout, tmp_path)


@pytest.mark.parametrize(
    "kind, api", [("pytorchjob", "kubeflow.org/v1"), ("trainjob", "trainer.kubeflow.org/v1alpha1")]
)
def test_manifest_renders_crd_valid_training_jobs(kind, api, tmp_path):
    result = _kfkit("manifest", "--training-job", kind, f"training={kind}")
    assert result.returncode == 0, result.stderr
    (job,) = yaml.safe_load_all(result.stdout)
    assert job["apiVersion"] == api
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    _assert_crd_valid(result.stdout, tmp_path)


def test_bench_passes_its_options_to_the_benchmark():
    for target, option in (("train", "--nprocs"), ("serve", "--concurrency")):
        result = _kfkit("bench", target, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: kfkit bench {target}" in result.stdout and option in result.stdout
    bad = _kfkit("bench", "train", "--rows", "many")
    assert bad.returncode == 2 and "--rows" in bad.stderr


def test_manifest_refuses_a_model_uri_that_is_not_a_version():
    result = _kfkit("manifest", "--storage-uri", "s3://bucket/model/")
    assert result.returncode == 2
    assert "'s3://bucket/model/' is not a published version" in result.stderr


def test_manifest_refuses_a_local_registry_uri():
    result = _kfkit("manifest", "--storage-uri", "file:///tmp/registry/m/1")
    assert result.returncode != 0
    assert "file:///tmp/registry/m/1" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_refuses_cluster_target_at_once(tmp_path):
    result = _kfkit("run", "deploy=kserve", f"work_dir={tmp_path}")
    assert result.returncode == 2
    assert "deploy.target='kserve'" in result.stderr
    assert "kfkit manifest" in result.stderr


@pytest.mark.slow
def test_failing_step_ends_with_its_own_reason(tmp_path):
    data = tmp_path / "no_label.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    result = _kfkit("run", "dataset=csv", f"dataset.path={data}", f"work_dir={tmp_path / 'work'}")
    assert result.returncode == 2  # a DatasetError: the user's input, not a crash
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kfkit run: error: step prep failed: columns ['label'] not found")
    assert "dataset.label" in last


def test_port_hint_of_kfkit_serve_can_be_pasted_back():
    """The server's 'port in use' hint names KServe's --http_port; `kfkit serve` accepts that spelling too."""
    import re
    import socket

    from kfkit.cli import build_parser
    from kfkit.deploy.local import ensure_port_free
    from kfkit.errors import ServingError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flag in ("--http_port", "--grpc_port", "--tfserving-grpc-port"):
            with pytest.raises(ServingError) as raised:
                ensure_port_free("127.0.0.1", port, flag)
            (hint,) = re.findall(rf"{flag}=\d+", str(raised.value))
            args = build_parser().parse_args(["serve", "--model-uri", "file:///m/1", hint])
            assert getattr(args, flag.lstrip("-").replace("-", "_")) == int(hint.split("=")[1])
