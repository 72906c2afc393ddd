"""The one mapping from a composed Hydra config to the pipeline's run parameters.

A local run (kfp.local), a compiled package's defaults, ``kfkit submit`` and a retrain run on a cluster all
call :func:`pipeline_arguments`, so the same config drives each of them the same way.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["pipeline_arguments", "retrain_arguments"]


def pipeline_arguments(cfg: KfkitConfig) -> dict[str, Any]:
    """The arguments of a run of the training pipeline for ``cfg``: ``{"config": <the config as a dict>}``.

    The whole config travels as one struct parameter and each step re-validates it
    (:func:`kfkit.config.from_dict`), so a step on a cluster checks exactly what a local run checks.
    """
    from kfkit.config import to_dict

    return {"config": to_dict(cfg)}


def retrain_arguments(cfg: KfkitConfig, reason: str) -> dict[str, Any]:
    """The arguments of a retrain run: the same pipeline and mapping, with ``retrain.reason`` set.

    ``cfg`` is already composed with the dataset's newest data (:func:`kfkit.retrain.launch.newest_data_overrides`);
    the reason becomes a run parameter, so every step (and the published version's lineage) sees why it ran.
    """
    return pipeline_arguments(dataclasses.replace(cfg, retrain=dataclasses.replace(cfg.retrain, reason=reason)))
