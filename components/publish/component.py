"""publish: write an immutable, digest-listed version to the model registry."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def publish(
    config: dict, prepared: Input[Dataset], model: Input[Model], evaluation: Input[Artifact], run_id: str = ""
) -> NamedTuple("PublishOutputs", model_uri=str, version=str):
    """Assemble the release (model, metrics, drift reference, model card) and publish it.

    Args:
        config: The whole kfkit config; ``registry``, ``model.name`` and ``drift`` are used.
        prepared: Output of prep (schema, stats, and the drift reference sample).
        model: Output of train.
        evaluation: Output of evaluate.
        run_id: Pipeline run that produced the version (recorded in the manifest and model card).

    Returns:
        model_uri: URI of the new version (what a server loads).
        version: Its version number.
    """
    import tempfile
    from collections import namedtuple

    from kfkit.config import from_dict
    from kfkit.release import assemble, publish_release

    cfg = from_dict(config)
    with tempfile.TemporaryDirectory(prefix="kfkit-release-") as staging:
        assemble(cfg, model_dir=model.path, prepared_dir=prepared.path, evaluation_dir=evaluation.path,
                 out_dir=staging, run_id=run_id)  # fmt: skip
        version = publish_release(cfg, staging, run_id=run_id)
    print(f"[publish] {version.name} version {version.version} -> {version.uri}")
    return namedtuple("PublishOutputs", ["model_uri", "version"])(version.uri, version.version)
