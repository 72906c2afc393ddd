"""The pipeline: prep -> train -> evaluate -> gate -> publish -> deploy -> smoke_test."""

from kfp import dsl
from kfp.dsl import Artifact

from kfkit.components.deploy import deploy
from kfkit.components.evaluate import evaluate
from kfkit.components.gate import gate
from kfkit.components.prep import prep
from kfkit.components.publish import publish
from kfkit.components.smoke_test import smoke_test
from kfkit.components.train import train

__all__ = ["training_pipeline", "PIPELINE_NAME"]

PIPELINE_NAME = "kfkit-training"


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
