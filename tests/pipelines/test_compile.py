"""Compiling the pipeline to KFP IR YAML, and running single components on kfp.local."""

import pytest
import yaml

from kfkit.config import to_dict
from kfkit.pipelines.compile import compile_pipeline

STEPS = ["prep", "train", "evaluate", "gate", "publish", "deploy", "smoke-test"]


def test_compiled_pipeline_has_every_step_in_order(tmp_path, make_config):
    config = to_dict(make_config("dataset=synthetic_fraud"))
    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml", config).read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert sorted(tasks) == sorted(STEPS)
    assert tasks["train"]["dependentTasks"] == ["prep"]
    assert sorted(tasks["gate"]["dependentTasks"]) == ["evaluate", "prep"]
    assert sorted(tasks["publish"]["dependentTasks"]) == ["evaluate", "gate", "prep", "train"]  # after the gate
    assert tasks["deploy"]["dependentTasks"] == ["publish"]
    default = spec["root"]["inputDefinitions"]["parameters"]["config"]["defaultValue"]
    assert default["dataset"]["kind"] == "synthetic_fraud"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"ghcr.io/kfkit/kfkit:0.1.0"}
    evaluate_outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]["artifacts"]
    assert evaluate_outputs["roc"]["artifactType"]["schemaTitle"] == "system.ClassificationMetrics"
    assert evaluate_outputs["report"]["artifactType"]["schemaTitle"] == "system.HTML"
    gate_outputs = spec["components"]["comp-gate"]["outputDefinitions"]["artifacts"]
    assert gate_outputs["report"]["artifactType"]["schemaTitle"] == "system.Markdown"
    assert gate_outputs["decision"]["artifactType"]["schemaTitle"] == "system.Artifact"
    # kfkit is in the image: no pip install of kfp at pod start
    commands = [" ".join(e["container"]["command"]) for e in spec["deploymentSpec"]["executors"].values()]
    assert not any("pip install" in c for c in commands)


def test_compiled_pipeline_places_the_train_pod_from_the_config(tmp_path, make_config):
    # kfp-kubernetes settings go into a second YAML document, the platform spec
    gpu, platform = yaml.safe_load_all(
        compile_pipeline(tmp_path / "gpu.yaml", to_dict(make_config("training=gpu"))).read_text()
    )
    train_executor = gpu["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train_executor["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train_executor["resources"]["accelerator"]["resourceCount"] == "1"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert k8s["emptyDirMounts"][0]["mountPath"] == "/dev/shm"
    assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    # only the train step is placed; a local-launcher config compiles with kfp's defaults
    assert set(platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]) == {"exec-train"}
    (plain,) = yaml.safe_load_all(compile_pipeline(tmp_path / "cpu.yaml", to_dict(make_config())).read_text())
    assert "accelerator" not in plain["deploymentSpec"]["executors"]["exec-train"]["container"].get("resources", {})


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:You may be attemping:RuntimeWarning")  # kfp: image name lacks "python"
def test_prep_runs_on_kfp_local(tmp_path, make_config):
    from kfp import local

    from kfkit.components.prep import prep

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = prep(config=to_dict(make_config("dataset=synthetic_fraud", "dataset.n_rows=2000")))
    prepared = task.outputs["prepared"]
    assert prepared.metadata["rows"]["train"] == 1300
    assert (tmp_path / "root").is_dir()
    assert prepared.path.startswith(str(tmp_path / "root"))
