"""Compile a pipeline to Kubeflow Pipelines IR YAML, for upload to a cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["compile_pipeline", "check_cluster_paths", "is_local_registry"]


def compile_pipeline(
    output: str | Path, config: dict | None = None, *, arguments: dict[str, Any] | None = None
) -> Path:
    """Write the training pipeline's IR YAML to ``output``, set up for a cluster as ``config`` says.

    Args:
        output: The YAML file to write (its folder is created).
        config: The composed config as a dict (:func:`kfkit.config.to_dict`): it places the train pod and sets
            images, caching, retries and secrets (see :func:`kfkit.pipelines.training_pipeline.build_pipeline`),
            and becomes the default ``config`` run parameter. None compiles kfp's defaults with no default.
        arguments: Default run parameters instead of :func:`kfkit.pipelines.parameters.pipeline_arguments`
            of ``config`` (a retrain run's, say); the pods are still set up from ``config``.

    Returns:
        The path written.
    """
    from kfp import compiler

    from kfkit.config import from_dict
    from kfkit.pipelines.parameters import pipeline_arguments
    from kfkit.pipelines.training_pipeline import build_pipeline

    cfg = from_dict(config) if config is not None else None
    training_pipeline = build_pipeline(cfg)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    params = arguments if arguments is not None else (pipeline_arguments(cfg) if cfg is not None else None)
    compiler.Compiler().compile(training_pipeline, package_path=str(out), pipeline_parameters=params)
    return out


def is_local_registry(cfg: KfkitConfig) -> bool:
    """True when ``registry.uri`` is a folder on this machine (file:// or a bare path)."""
    return cfg.registry.uri.startswith("file://") or "://" not in cfg.registry.uri


def check_cluster_paths(cfg: KfkitConfig, *, allow_local_paths: bool = False) -> None:
    """Refuse a config whose registry a cluster's pipeline pods cannot reach, unless told every pod mounts it.

    Raises:
        ConfigError: a file:// registry without ``allow_local_paths``; the message says what to pass instead.
    """
    if is_local_registry(cfg) and not allow_local_paths:
        raise ConfigError(
            f"registry.uri={cfg.registry.uri} is a folder on this machine, which the cluster's pipeline pods cannot "
            "read: use an S3 registry (registry=s3 registry.uri=s3://BUCKET/PREFIX [registry.endpoint=http://…]), "
            "or pass --allow-local-paths if every pod mounts this path"
        )
