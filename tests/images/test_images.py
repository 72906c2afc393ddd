"""Both images built here with buildah and run the way a cluster runs them.

The predictor serves a published version and answers a V2 request as the offline model does; the prep
component runs through kfp's executor entry point with the command its compiled pipeline gives a pod;
the drift detector starts and answers readiness. Each container shares the host network (127.0.0.1).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from images_helpers import IMAGE_UID, Container, port_is_closed, stop, tail, wait_http_200, writable

pytestmark = pytest.mark.slow  # cold: both images from nothing (tens of minutes); warm: about a minute

# Where a KFP v2 pod finds an s3:// artifact (kfp.dsl.types.artifact_types: s3://b/k -> /s3/b/k).
KFP_S3_MOUNT = "/s3"


def _shell(container: Container, script: str, user: str = "") -> str:
    result = container.run("sh", "-c", script, user=user)
    assert result.returncode == 0, f"{script}: {result.stderr}"
    return result.stdout


# Ceilings on the image's files (MB): measured 3,727 and 1,882 (docs/images.md); a second copy of torch,
# the test suites or tensorflow's headers coming back would cross them.
@pytest.mark.parametrize(
    ("name", "imports", "max_mb"),
    [
        ("kfkit", "torch, tensorflow, kserve, kfp, feast, sklearn, pandas, pyarrow, kfkit.serving.server", 4000),
        ("kfkit-drift", "torch, alibi_detect, fastapi, kfkit.serving.drift.service", 2100),
    ],
)
def test_image_is_small_non_root_and_records_the_commit(
    images, image_commit: str, name: str, imports: str, max_mb: int
) -> None:
    with Container(images[name]) as box:
        assert _shell(box, "id -u").strip() == str(IMAGE_UID)
        size_mb = int(_shell(box, "du -smx / | cut -f1", user="0"))
        assert size_mb <= max_mb, f"{name} holds {size_mb} MB of files, over the {max_mb} MB ceiling"
        # No compiler or build tool, no test folder, nothing of the build machine, one copy of torch.
        assert _shell(box, "for t in gcc cc c++ g++ clang make; do command -v $t || true; done") == ""
        assert _shell(box, "find /opt/venv -type d -name tests | head -5") == ""
        leftovers = "/run/host-ca.crt /run/kfkit-build /run/wheels /root/.cache /src /opt/venv/bin/pip"
        # As root: uid 1000 cannot look into /root.
        assert _shell(box, f"for p in {leftovers}; do test -e $p && echo $p || true; done", user="0") == ""
        assert _shell(box, "ls -A /mnt") == "", "the build-time mount on /mnt left files in the image"
        find_torch = "find / -xdev \\( -name 'libtorch_cpu.so' -o -name 'torch-*.dist-info' \\) -print"
        torches = _shell(box, find_torch, user="0")
        assert len(torches.split()) == 2, torches
        # Lineage: publish records $KFKIT_GIT_COMMIT where there is no .git.
        code = box.run("python", "-c", f"import json, {imports}; from kfkit.registry.publish import code_version; "
                       "print(json.dumps(code_version()))")  # fmt: skip
        assert code.returncode == 0, code.stderr[-3000:]
        assert json.loads(code.stdout.splitlines()[-1])["git_commit"] == image_commit
        if name == "kfkit":  # the ENTRYPOINT: kfkit's console script, installed under its own prefix
            assert "usage: kfkit" in _shell(box, "kfkit --help")


def test_predictor_image_serves_a_published_version(images, published_model, tmp_path, free_port) -> None:
    from kfkit.deploy.local import LocalEndpoint, infer_v2

    model = published_model
    http_port, grpc_port = free_port(), free_port()
    log = tmp_path / "predictor.log"
    endpoint = LocalEndpoint(model_name="test-mlp", pid=0, host="127.0.0.1", http_port=http_port,
                             grpc_port=grpc_port, log_path=log)  # fmt: skip
    with Container(images["kfkit"], volumes={model.registry: "/mnt/registry:ro"}) as box:
        server = box.start("python", "-m", "kfkit.serving.server", "--model-uri", model.uri_in_image,
                           "--model-name", "test-mlp", "--host", "127.0.0.1", "--http_port", str(http_port),
                           "--grpc_port", str(grpc_port), log=log)  # fmt: skip
        wait_http_200([f"{endpoint.base_url}/v2/health/ready", f"{endpoint.base_url}/v2/models/test-mlp/ready"],
                      server, log)  # fmt: skip
        result = infer_v2(endpoint, model.rows.tolist())
        stop(server)
    outputs = {o["name"]: o for o in result["outputs"]}
    np.testing.assert_allclose(outputs["probability"]["data"], model.expected, rtol=0, atol=1e-6)
    assert outputs["label"]["data"] == [int(p >= 0.5) for p in model.expected]
    assert port_is_closed(http_port), f"the server still listens after stop:\n{tail(log)}"


def test_prep_component_runs_as_a_kfp_pod_runs_it(images, tmp_path) -> None:
    import yaml

    from kfkit.config import compose, to_dict
    from kfkit.pipelines.compile import compile_pipeline

    config = to_dict(compose(["dataset=breast_cancer"]))
    spec = yaml.safe_load(compile_pipeline(tmp_path / "pipeline.yaml", config=config).read_text())
    container = spec["deploymentSpec"]["executors"]["exec-prep"]["container"]
    artifact_type = spec["components"]["comp-prep"]["outputDefinitions"]["artifacts"]["prepared"]["artifactType"]

    # What KFP's launcher hands the pod: the inputs, an s3:// URI per output (read at /s3/...), an output file.
    s3 = writable(tmp_path / "s3")
    writable(s3 / "kfkit-test" / "run-1" / "prep")
    executor_input = {
        "inputs": {"parameterValues": {"config": config}},
        "outputs": {
            "artifacts": {"prepared": {"artifacts": [
                {"name": "prepared", "type": artifact_type, "uri": "s3://kfkit-test/run-1/prep/prepared",
                 "metadata": {}},
            ]}},
            "outputFile": f"{KFP_S3_MOUNT}/kfkit-test/run-1/prep/executor_output.json",
        },
    }  # fmt: skip
    args = [json.dumps(executor_input) if arg == "{{$}}" else arg for arg in container["args"]]
    with Container(images["kfkit"], volumes={s3: KFP_S3_MOUNT}) as box:
        result = box.run(*container["command"], *args, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "[prep] breast_cancer:" in result.stdout, result.stdout[-2000:]

    import pandas as pd

    prepared = s3 / "kfkit-test" / "run-1" / "prep" / "prepared"
    splits = {name: len(pd.read_parquet(prepared / f"{name}.parquet")) for name in ("train", "val", "test")}
    assert sum(splits.values()) == 569 and (prepared / "schema.json").exists(), splits
    output = json.loads((prepared.parent / "executor_output.json").read_text())
    metadata = output["artifacts"]["prepared"]["artifacts"][0]["metadata"]
    assert (metadata["rows"], metadata["features"]) == (splits, 30)


def test_drift_image_starts_the_detector(images, drift_version, tmp_path, free_port) -> None:
    port = free_port()
    state = writable(tmp_path / "state")
    log = tmp_path / "drift.log"
    volumes = {drift_version.registry: "/mnt/registry:ro", state: "/mnt/state"}
    with Container(images["kfkit-drift"], volumes=volumes, env={"K_SINK": ""}) as box:
        argv = ["--model-uri", drift_version.uri_in_image, "--host", "127.0.0.1", "--port", str(port)]
        detector = box.start("python", "-m", "kfkit.serving.drift", *argv, "--state-dir", "/mnt/state", log=log)
        wait_http_200([f"http://127.0.0.1:{port}/v2/health/ready"], detector, log)
        stop(detector)
    assert detector.returncode is not None and port_is_closed(port), tail(log)


@pytest.fixture
def published_model(tmp_path) -> object:
    """A small MLP with non-trivial standardisation, published to a file:// registry, and rows to score."""
    from types import SimpleNamespace

    import torch

    from kfkit.model import ModelSpec, build_model, predict_proba, save_model
    from kfkit.registry import publish_folder

    features = [f"x{i:02d}" for i in range(30)]
    torch.manual_seed(0)
    spec = ModelSpec(name="test-mlp", feature_names=features, hidden_dims=[16, 8], threshold=0.5)
    net = build_model(spec)
    rng = np.random.default_rng(3)
    mean = rng.normal(0, 10, 30).astype(np.float32)
    std = rng.uniform(0.5, 5, 30).astype(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(mean))
        net.feature_std.copy_(torch.from_numpy(std))
    net.eval()
    registry = tmp_path / "registry"
    version = publish_folder(save_model(net, spec, tmp_path / "model"), registry_uri=f"file://{registry}",
                             name="test-mlp")  # fmt: skip
    rows = (mean + std * rng.normal(0, 3, (6, 30))).astype(np.float32)
    return SimpleNamespace(registry=registry, uri_in_image=_in_image(version.uri, registry), rows=rows,
                           expected=predict_proba(net, rows))  # fmt: skip


@pytest.fixture
def drift_version(tmp_path) -> object:
    """A fraud-model version with reference data, as the drift detector reads it."""
    from types import SimpleNamespace

    from kfkit.data.sources import synthetic_fraud
    from kfkit.registry import publish_folder

    features = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
    release = tmp_path / "release"
    release.mkdir()
    synthetic_fraud(n_rows=500, seed=1)[features].to_parquet(release / "reference.parquet", index=False)
    spec = {"name": "fraud-mlp", "feature_names": features, "threshold": 0.5, "hidden_dims": [8]}
    (release / "model.json").write_text(json.dumps(spec))
    (release / "config.json").write_text(json.dumps({"drift": {"window_size": 100, "window_seconds": 0}}))
    registry = tmp_path / "registry"
    version = publish_folder(release, registry_uri=f"file://{registry}", name="fraud-mlp")
    return SimpleNamespace(registry=registry, uri_in_image=_in_image(version.uri, registry))


def _in_image(uri: str, registry: Path) -> str:
    """The version URI as the container sees it: the registry folder is mounted at /mnt/registry."""
    prefix = f"file://{registry}"
    assert uri.startswith(prefix), (uri, prefix)
    return "file:///mnt/registry" + uri[len(prefix) :]
