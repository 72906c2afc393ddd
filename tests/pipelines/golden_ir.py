"""Golden files of the compiled pipelines: the cases, a normalized extract of the IR as kfp loads it back, a diff.

The extract keeps what a cluster acts on (each step's image, resources, caching, retry policy, order, and its
Kubernetes settings: secrets as env, tolerations, node selector, volumes) and leaves out what churns without
meaning (the SDK version, the embedded component source, the whole default config). Regenerate with
``KFKIT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/pipelines/test_golden.py``, then review ``git diff``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml

__all__ = ["CASES", "GOLDEN_DIR", "compile_case", "extract", "check_golden", "DIGEST"]

GOLDEN_DIR = Path(__file__).parent / "golden"
DIGEST = "sha256:" + "5f" * 32
_S3 = ["registry=s3", "registry.uri=s3://kfkit-models/team-a", "registry.endpoint=http://minio.minio.svc:9000"]
CASES: dict[str, dict[str, Any]] = {
    # The default CPU pipeline on an S3 registry, credentials from the Secret kfkit-s3.
    "training-cpu": {"pipeline": "kfkit-training", "overrides": [*_S3, "kubeflow.s3_secret=kfkit-s3"]},
    # One GPU node (training=gpu), the kfkit image pinned by digest.
    "training-gpu": {
        "pipeline": "kfkit-training",
        "overrides": [*_S3, "kubeflow.s3_secret=kfkit-s3", "training=gpu", f"images.main=ghcr.io/acme/kfkit@{DIGEST}"],
    },
    # A PyTorchJob trains; the step only submits and waits (shared claim, deadline); credentials by IAM role.
    "training-pytorchjob": {"pipeline": "kfkit-training", "overrides": [*_S3, "training=pytorchjob"]},
    # What the retrain trigger runs on a cluster: the same pipeline, the newest data and the reason as arguments.
    "retrain": {
        "pipeline": "kfkit-training",
        "overrides": [*_S3, "kubeflow.s3_secret=kfkit-s3", "dataset=synthetic_fraud", "images.tag=2.0.1"],
        "reason": "drift in 3 of the last 5 windows of fraud-mlp/4 (data)",
    },
}
# Default config values the extract shows (the rest of the config is the schema's business, not the IR's).
_DEFAULTS = ("dataset.kind", "dataset.drift", "registry.uri", "images.main", "deploy.image", "retrain.reason")


def compile_case(name: str, out: Path) -> Path:
    """Compile golden case ``name`` to ``out`` the way kfkit does (compile/submit, or the retrain trigger)."""
    from kfkit.config import compose, to_dict
    from kfkit.pipelines.compile import compile_pipeline
    from kfkit.pipelines.parameters import retrain_arguments
    from kfkit.retrain.launch import newest_data_overrides

    case = CASES[name]
    cfg = compose(case["overrides"])
    if "reason" not in case:
        return compile_pipeline(out, to_dict(cfg))
    retrain_cfg = compose([*case["overrides"], *newest_data_overrides(cfg)])
    arguments = retrain_arguments(retrain_cfg, case["reason"])
    return compile_pipeline(out, arguments["config"], arguments=arguments)


def extract(path: Path) -> dict[str, Any]:
    """The normalized structure of the compiled YAML at ``path``, read back through kfp's own loader."""
    from google.protobuf import json_format
    from kfp import components

    loaded = components.load_component_from_file(str(path))
    spec = json_format.MessageToDict(loaded.pipeline_spec)
    platform = json_format.MessageToDict(loaded.platform_spec)
    k8s = platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
    executors = spec["deploymentSpec"]["executors"]
    tasks = {}
    for name, task in sorted(spec["root"]["dag"]["tasks"].items()):
        component = spec["components"][task["componentRef"]["name"]]
        executor = component["executorLabel"]
        container = executors[executor]["container"]
        entry: dict[str, Any] = {
            "after": sorted(task.get("dependentTasks", [])),
            "caching": bool(task.get("cachingOptions", {}).get("enableCache", False)),
            "image": container["image"],
            "runs": container["args"][container["args"].index("--function_to_execute") + 1],
            "pip_install": any("pip install" in part for part in container.get("command", [])),
        }
        if "retryPolicy" in task:
            entry["retry"] = task["retryPolicy"]
        if resources := _resources(container.get("resources", {})):
            entry["resources"] = resources
        if executor in k8s:
            entry["kubernetes"] = _kubernetes(k8s[executor])
        tasks[name] = entry
    defaults = spec["root"]["inputDefinitions"]["parameters"]["config"].get("defaultValue", {})
    return {
        "pipeline": loaded.name,
        "inputs": {k: v["parameterType"] for k, v in sorted(spec["root"]["inputDefinitions"]["parameters"].items())},
        "defaults": {key: _get(defaults, key) for key in _DEFAULTS},
        "tasks": tasks,
    }


def _resources(resources: dict[str, Any]) -> dict[str, Any]:
    """Requests and limits as written (``resourceCpuRequest: '8'``), not kfp's deprecated float copies."""
    kept = {k: v for k, v in resources.items() if k.startswith("resource")}
    if accelerator := resources.get("accelerator"):
        kept["accelerator"] = {k: accelerator[k] for k in ("resourceType", "resourceCount") if k in accelerator}
    return kept


def _kubernetes(config: dict[str, Any]) -> dict[str, Any]:
    """The executor's Kubernetes settings; a Secret's name once (kfp writes it twice, old and new field)."""
    config = dict(config)
    for secret in config.get("secretAsEnv", []):
        secret.pop("secretNameParameter", None)
    return config


def _get(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def check_golden(name: str, actual: dict[str, Any]) -> None:
    """Assert ``actual`` equals golden/<name>.yaml, with a unified diff; KFKIT_UPDATE_GOLDEN=1 rewrites it."""
    path = GOLDEN_DIR / f"{name}.yaml"
    header = f"# Golden extract of the compiled pipeline, case {name!r} (tests/pipelines/golden_ir.py).\n"
    header += "# Regenerate: KFKIT_UPDATE_GOLDEN=1 .venv/bin/pytest tests/pipelines/test_golden.py; review the diff.\n"
    text = header + yaml.safe_dump(actual, sort_keys=True, width=120)
    if os.environ.get("KFKIT_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    expected = path.read_text() if path.is_file() else ""
    if expected != text:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True), text.splitlines(keepends=True), f"golden/{name}.yaml", "compiled"
            )
        )
        raise AssertionError(
            f"the compiled pipeline differs from golden/{name}.yaml (if meant, regenerate with "
            f"KFKIT_UPDATE_GOLDEN=1):\n{diff}"
        )
