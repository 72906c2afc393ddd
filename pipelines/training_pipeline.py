"""The pipeline: prep -> train -> evaluate -> gate -> publish -> deploy -> smoke_test.

``training_pipeline`` is the pipeline as kfp.local runs it. ``build_pipeline(cfg)`` is the same pipeline
with the train step's pod placement (GPUs, node selector, tolerations, /dev/shm, shared claim) taken
from a config: placement is part of the compiled pod spec, so it is fixed when the YAML is compiled.
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
    """The pipeline function, with the train step placed as ``cfg.training.cluster`` says.

    Args:
        cfg: Config whose ``training.cluster`` sets the train pod's placement; None leaves kfp's defaults
            (what kfp.local uses). Run it with the same ``training.cluster`` in its ``config`` parameter.
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
        prepared = prep(config=config).outputs["prepared"]
        train_task = train(config=config, prepared=prepared)
        if cfg is not None:
            from kfkit.pipelines.placement import apply_train_placement

            apply_train_placement(train_task, cfg)
        model = train_task.outputs["model"]
        evaluation = evaluate(config=config, prepared=prepared, model=model).outputs["evaluation"]
        decision = gate(config=config, prepared=prepared, evaluation=evaluation).outputs["decision"]
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
        return smoke_task.outputs["summary"]

    return training_pipeline


training_pipeline = build_pipeline()
