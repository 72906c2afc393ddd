"""Golden-file tests of the compiled pipelines: images, caching, retries, GPUs, placement, secrets, volumes.

Each case is compiled the way kfkit compiles it, loaded back with kfp's own loader, reduced to a stable
extract and compared with tests/pipelines/golden/<case>.yaml (see golden_ir.py to regenerate).
"""

import importlib
import pkgutil

import pytest
from golden_ir import CASES, DIGEST, GOLDEN_DIR, check_golden, compile_case, extract

from kfkit.pipelines.cluster import REGISTRY_STEPS, UNCACHED_STEPS

STEPS = {"prep", "train", "evaluate", "gate", "publish", "deploy", "smoke-test"}
S3_ENV = [
    {"envVar": "AWS_ACCESS_KEY_ID", "secretKey": "AWS_ACCESS_KEY_ID"},
    {"envVar": "AWS_SECRET_ACCESS_KEY", "secretKey": "AWS_SECRET_ACCESS_KEY"},
]


@pytest.fixture(scope="module")
def extracts(tmp_path_factory):
    """Every case compiled once, as its extract."""
    out = tmp_path_factory.mktemp("golden")
    return {name: extract(compile_case(name, out / f"{name}.yaml")) for name in CASES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_pipeline_matches_its_golden_file(case, extracts):
    check_golden(case, extracts[case])


def test_every_pipeline_in_pipelines_has_a_golden_case():
    from kfp.dsl.graph_component import GraphComponent

    import kfkit.pipelines

    found = set()
    for module in pkgutil.iter_modules(kfkit.pipelines.__path__):
        loaded = importlib.import_module(f"kfkit.pipelines.{module.name}")
        found |= {v.name for v in vars(loaded).values() if isinstance(v, GraphComponent)}
    assert found == {"kfkit-training"}
    assert found <= {case["pipeline"] for case in CASES.values()}
    assert {p.stem for p in GOLDEN_DIR.glob("*.yaml")} == set(CASES)  # no stale golden file


@pytest.mark.parametrize("case", sorted(CASES))
def test_side_effect_steps_are_never_cached_and_train_is_retried(case, extracts):
    tasks = extracts[case]["tasks"]
    assert set(tasks) == STEPS
    uncached = {name.replace("_", "-") for name in UNCACHED_STEPS}
    assert {name for name, task in tasks.items() if not task["caching"]} == uncached
    assert {"publish", "deploy"} <= uncached
    assert tasks["train"]["retry"] == {
        "maxRetryCount": 2, "backoffDuration": "60s", "backoffFactor": 2.0, "backoffMaxDuration": "3600s",
    }  # fmt: skip
    assert all("retry" not in task for name, task in tasks.items() if name != "train")
    assert not any(task["pip_install"] for task in tasks.values())  # kfkit is in the image


def test_images_come_from_the_config(extracts):
    for case, image in (
        ("training-cpu", "ghcr.io/kfkit/kfkit:0.1.0"),
        ("training-gpu", f"ghcr.io/acme/kfkit@{DIGEST}"),
        ("retrain", "ghcr.io/kfkit/kfkit:2.0.1"),
    ):
        assert {task["image"] for task in extracts[case]["tasks"].values()} == {image}
        assert extracts[case]["defaults"]["deploy.image"] == image  # the ServingRuntime's image too


def test_gpu_train_pod_placement(extracts):
    train = extracts["training-gpu"]["tasks"]["train"]
    assert train["resources"]["accelerator"] == {"resourceType": "nvidia.com/gpu", "resourceCount": "1"}
    assert train["resources"]["resourceCpuRequest"] == "8"
    k8s = train["kubernetes"]
    assert k8s["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert k8s["nodeSelector"] == {"labels": {"nvidia.com/gpu.present": "true"}}
    shm = {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "dshm"}
    assert k8s["emptyDirMounts"] == [shm]
    assert "resources" not in extracts["training-cpu"]["tasks"]["train"]


def test_s3_credentials_come_from_the_secret_as_env_only_where_the_registry_is_used(extracts):
    tasks = extracts["training-cpu"]["tasks"]
    with_secret = {name for name, task in tasks.items() if "secretAsEnv" in task.get("kubernetes", {})}
    assert with_secret == {name.replace("_", "-") for name in REGISTRY_STEPS}
    for name in with_secret:
        (secret,) = tasks[name]["kubernetes"]["secretAsEnv"]
        assert secret["secretName"] == "kfkit-s3" and secret["keyToEnv"] == S3_ENV
    # no secret configured (IAM role): no secret in any pod
    assert not any("secretAsEnv" in t.get("kubernetes", {}) for t in extracts["training-pytorchjob"]["tasks"].values())


def test_the_retrain_pipeline_is_the_training_pipeline_with_retrain_arguments(extracts):
    retrain, training = extracts["retrain"], extracts["training-cpu"]
    assert retrain["pipeline"] == training["pipeline"] == "kfkit-training"
    assert retrain["defaults"]["retrain.reason"] == CASES["retrain"]["reason"]
    assert retrain["defaults"]["dataset.drift"] == 0.5  # retrain.synthetic_drift: the newest data
    assert training["defaults"]["retrain.reason"] in ("", None)

    def shape(tasks):
        return {name: {k: v for k, v in task.items() if k != "image"} for name, task in tasks.items()}

    assert shape(retrain["tasks"]) == shape(training["tasks"])  # same steps, order, caching, retries, secrets


def test_a_golden_mismatch_fails_with_a_readable_diff(extracts, monkeypatch):
    monkeypatch.delenv("KFKIT_UPDATE_GOLDEN", raising=False)
    changed = {**extracts["training-cpu"], "tasks": dict(extracts["training-cpu"]["tasks"])}
    changed["tasks"]["publish"] = {**changed["tasks"]["publish"], "caching": True}
    with pytest.raises(AssertionError, match=r"(?s)differs from golden/training-cpu.yaml.*-    caching: false") as e:
        check_golden("training-cpu", changed)
    assert "+    caching: true" in str(e.value)
