"""Compile the pipeline to Kubeflow Pipelines IR YAML, for upload to a cluster."""

from __future__ import annotations

from pathlib import Path

__all__ = ["compile_pipeline"]


def compile_pipeline(output: str | Path, config: dict | None = None) -> Path:
    """Write the pipeline's IR YAML to ``output``; ``config`` becomes the default run parameter."""
    from kfp import compiler

    from kfkit.pipelines.training_pipeline import training_pipeline

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = {"config": config} if config is not None else None
    compiler.Compiler().compile(training_pipeline, package_path=str(out), pipeline_parameters=params)
    return out
