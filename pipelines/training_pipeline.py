"""The pipeline: prep -> train -> evaluate -> gate -> publish -> deploy -> smoke_test.

``training_pipeline`` is the pipeline as kfp.local runs it. ``build_pipeline(cfg)`` is the same pipeline
with what a cluster needs taken from a config: the train step's pod placement (GPUs, node selector,
tolerations, /dev/shm, shared claim, see :mod:`kfkit.pipelines.placement`) and every step's image, caching,
S3 secret and train's retry policy (:mod:`kfkit.pipelines.cluster`). Those are part of the compiled pod
specs, so they are fixed when the YAML is compiled. A retrain run is this same pipeline with retrain
arguments (:func:`kfkit.pipelines.parameters.retrain_arguments`); there is no second definition.
"""

from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from kfp import dsl
from kfp.dsl import Artifact

from kfkit.components.deploy import deploy
from kfkit.components.evaluate import evaluate
from kfkit.components.gate import gate
from kfkit.components.prep import prep
from kfkit.components.publish import publish
from kfkit.components.smoke_test import smoke_test
from kfkit.components.train import train

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["training_pipeline", "build_pipeline", "PIPELINE_NAME"]

PIPELINE_NAME = "kfkit-training"


# No `from __future__ import annotations` here: kfp reads the pipeline function's real annotations.
def build_pipeline(cfg: Optional["KfkitConfig"] = None) -> Callable:
    """The pipeline function, with its pods set up for a cluster as ``cfg`` says.

    Args:
        cfg: Compile-time config: ``training.cluster`` places the train pod, ``images``, ``kubeflow`` and
            ``registry.uri`` set images, caching, retries and S3 secrets; None leaves kfp's defaults (what
            kfp.local uses). Run it with the same config in its ``config`` parameter.
    """

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Prepare data, train with DDP, evaluate, gate against production, publish, serve on KServe.",
    )
    def training_pipeline(config: dict) -> Artifact:
        """Train, evaluate, gate, publish and serve one model.

        A candidate that fails the gate stops the run at the gate step: nothing is published or deployed.

        Args:
            config: The whole kfkit config as a dict (``kfkit.config.to_dict(compose(...))``).

        Returns:
            The run summary (smoke_test's ``summary``): model, version, metrics, gate, endpoint URLs.
        """
        prep_task = prep(config=config)
        prepared = prep_task.outputs["prepared"]
        train_task = train(config=config, prepared=prepared)
        model = train_task.outputs["model"]
        evaluate_task = evaluate(config=config, prepared=prepared, model=model)
        evaluation = evaluate_task.outputs["evaluation"]
        gate_task = gate(config=config, prepared=prepared, evaluation=evaluation)
        decision = gate_task.outputs["decision"]
        publish_task = publish(
            config=config,
            prepared=prepared,
            model=model,
            evaluation=evaluation,
            gate=decision,
            run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
        )
        deploy_task = deploy(config=config, model_uri=publish_task.outputs["model_uri"])
        smoke_task = smoke_test(
            model_uri=publish_task.outputs["model_uri"],
            version=publish_task.outputs["version"],
            promoted_to=publish_task.outputs["promoted_to"],
            prepared=prepared,
            evaluation=evaluation,
            gate=decision,
            endpoint=deploy_task.outputs["endpoint"],
        )
        if cfg is not None:
            from kfkit.pipelines.cluster import apply_cluster_settings
            from kfkit.pipelines.placement import apply_train_placement

            apply_train_placement(train_task, cfg)
            tasks = {"prep": prep_task, "train": train_task, "evaluate": evaluate_task, "gate": gate_task,
                     "publish": publish_task, "deploy": deploy_task, "smoke_test": smoke_task}  # fmt: skip
            apply_cluster_settings(tasks, cfg)
        return smoke_task.outputs["summary"]

    return training_pipeline


training_pipeline = build_pipeline()
