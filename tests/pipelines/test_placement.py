"""Train-step placement compiled into real KFP IR: resources, GPUs, node selector, tolerations, volumes."""

from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from kfkit.config import KfkitConfig, compose, from_dict, to_dict
from kfkit.errors import ConfigError
from kfkit.pipelines.placement import apply_train_placement
from kfkit.training.jobs import SHARED_MOUNT, SHARED_PVC

TAINTS = [
    {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"},
]


def cluster_config(nproc: int = 2, **cluster: object) -> KfkitConfig:
    data = to_dict(compose([]))
    data["training"]["nproc"] = nproc
    data["training"]["cluster"].update(cluster)
    return from_dict(data)


def compile_train(cfg: KfkitConfig, tmp_path: Path) -> tuple[dict, dict]:
    """Compile prep -> train with the placement; return train's container spec and its kubernetes config."""
    from kfkit.components.prep import prep
    from kfkit.components.train import train

    @dsl.pipeline(name="placement-check")
    def pipeline(config: dict):
        prep_task = prep(config=config)
        apply_train_placement(train(config=config, prepared=prep_task.outputs["prepared"]), cfg)

    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, package_path=str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    container = docs[0]["deploymentSpec"]["executors"]["exec-train"]["container"]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    assert "exec-prep" not in platform  # placement touches the train step only
    return container, platform.get("exec-train", {})


def test_local_launcher_changes_nothing(tmp_path):
    container, platform = compile_train(cluster_config(launcher="local", gpus_per_node=1, nproc=1), tmp_path)
    assert "resources" not in container
    assert platform == {}


def test_in_pod_gpu_placement(tmp_path):
    cfg = cluster_config(
        nproc=4,
        launcher="in_pod",
        gpus_per_node=4,
        cpu_request="16",
        memory_request="64Gi",
        shm_size="8Gi",
        image="registry.example.com/kfkit:gpu",
        node_selector={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        tolerations=TAINTS,
    )
    container, platform = compile_train(cfg, tmp_path)
    resources = container["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "4"
    assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == ("16", "64Gi")
    assert container["image"] == "registry.example.com/kfkit:gpu"
    assert platform["nodeSelector"] == {"labels": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}
    assert platform["tolerations"] == TAINTS
    assert platform["emptyDirMounts"] == [
        {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": "8Gi", "volumeName": "dshm"}
    ]


def test_in_pod_cpu_has_no_accelerator_and_keeps_the_image(tmp_path):
    from kfkit.components import KFKIT_IMAGE

    container, platform = compile_train(cluster_config(launcher="in_pod"), tmp_path)
    assert "accelerator" not in container["resources"]
    assert container["resources"]["resourceCpuRequest"] == "2"
    assert container["image"] == KFKIT_IMAGE
    assert "nodeSelector" not in platform and "tolerations" not in platform
    assert platform["emptyDirMounts"][0]["sizeLimit"] == "2Gi"


@pytest.mark.parametrize("launcher", ["pytorchjob", "trainjob"])
def test_job_submitter_is_small_and_mounts_the_shared_claim(tmp_path, launcher):
    cfg = cluster_config(nproc=8, launcher=launcher, gpus_per_node=8, num_nodes=2, tolerations=TAINTS)
    container, platform = compile_train(cfg, tmp_path)
    resources = container["resources"]
    assert "accelerator" not in resources  # the job's pods hold the GPUs, not the submitter
    assert (resources["resourceCpuRequest"], resources["resourceMemoryRequest"]) == ("250m", "512Mi")
    assert platform["pvcMount"][0]["mountPath"] == SHARED_MOUNT
    assert platform["pvcMount"][0]["pvcNameParameter"]["runtimeValue"]["constant"] == SHARED_PVC
    assert int(platform["activeDeadlineSeconds"]) > cfg.training.cluster.job_timeout_s
    assert "tolerations" not in platform


def test_in_pod_refuses_several_nodes(tmp_path):
    with pytest.raises(ConfigError, match="num_nodes=2; use launcher=pytorchjob or trainjob"):
        compile_train(cluster_config(launcher="in_pod", num_nodes=2), tmp_path)


def test_config_files_compose(tmp_path):
    """configs/training/{gpu,pytorchjob,trainjob}.yaml extend default.yaml and compile."""
    for option, launcher in (("gpu", "in_pod"), ("pytorchjob", "pytorchjob"), ("trainjob", "trainjob")):
        cfg = compose([f"training={option}"])
        assert cfg.training.cluster.launcher == launcher
        assert cfg.training.epochs == compose([]).training.epochs  # inherited from default.yaml
        assert cfg.training.nproc == cfg.training.cluster.gpus_per_node
        compile_train(cfg, tmp_path)


@pytest.mark.parametrize(("master", "mounted"), [("k8s", True), ("local", False)])
def test_prep_mounts_the_shared_claim_only_when_spark_runs_on_the_cluster(tmp_path, master, mounted):
    from kfkit.pipelines.compile import compile_pipeline

    config = to_dict(compose(["data.engine=spark", f"data.spark.master={master}"]))
    path = compile_pipeline(tmp_path / "pipeline.yaml", config)
    docs = list(yaml.safe_load_all(path.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    mounts = platform.get("exec-prep", {}).get("pvcMount", [])
    assert [(m["mountPath"], m["pvcNameParameter"]["runtimeValue"]["constant"]) for m in mounts] == (
        [(SHARED_MOUNT, SHARED_PVC)] if mounted else []
    )
