"""Compile the pipeline to Kubeflow Pipelines IR YAML, for upload to a cluster."""

from __future__ import annotations

from pathlib import Path

__all__ = ["compile_pipeline"]


def compile_pipeline(output: str | Path, config: dict | None = None) -> Path:
    """Write the pipeline's IR YAML to ``output``; ``config`` becomes the default run parameter.

    The train step's pod placement (``training.cluster``: GPUs, node selector, tolerations, shared claim)
    is compiled in from ``config`` too.
    """
    from kfp import compiler

    from kfkit.config import from_dict
    from kfkit.pipelines.training_pipeline import build_pipeline

    training_pipeline = build_pipeline(from_dict(config) if config is not None else None)

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"config": config} if config is not None else None
    compiler.Compiler().compile(training_pipeline, package_path=str(out), pipeline_parameters=params)
    return out
