"""The pipeline: prep -> train -> evaluate -> publish -> deploy -> smoke_test."""

from kfp import dsl
from kfp.dsl import Artifact

from kfkit.components.deploy import deploy
from kfkit.components.evaluate import evaluate
from kfkit.components.prep import prep
from kfkit.components.publish import publish
from kfkit.components.smoke_test import smoke_test
from kfkit.components.train import train

__all__ = ["training_pipeline", "PIPELINE_NAME"]

PIPELINE_NAME = "kfkit-training"


@dsl.pipeline(name=PIPELINE_NAME, description="Prepare data, train with DDP, evaluate, publish, serve on KServe.")
def training_pipeline(config: dict) -> Artifact:
    """Train, evaluate, publish and serve one model.

    Args:
        config: The whole kfkit config as a dict (``kfkit.config.to_dict(compose(...))``).

    Returns:
        The run summary (smoke_test's ``summary``): model, version, metrics, endpoint URLs.
    """
    prep_task = prep(config=config)
    train_task = train(config=config, prepared=prep_task.outputs["prepared"])
    eval_task = evaluate(config=config, prepared=prep_task.outputs["prepared"], model=train_task.outputs["model"])
    publish_task = publish(
        config=config,
        prepared=prep_task.outputs["prepared"],
        model=train_task.outputs["model"],
        evaluation=eval_task.outputs["evaluation"],
        run_id=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
    )
    deploy_task = deploy(config=config, model_uri=publish_task.outputs["model_uri"])
    smoke_task = smoke_test(
        model_uri=publish_task.outputs["model_uri"],
        version=publish_task.outputs["version"],
        prepared=prep_task.outputs["prepared"],
        evaluation=eval_task.outputs["evaluation"],
        endpoint=deploy_task.outputs["endpoint"],
    )
    return smoke_task.outputs["summary"]
