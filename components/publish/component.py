"""publish: write an immutable, digest-listed version to the model registry and promote it."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def publish(
    config: dict,
    prepared: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    gate: Input[Artifact],
    run_id: str = "",
) -> NamedTuple("PublishOutputs", model_uri=str, version=str, promoted_to=str):
    """Assemble the release (model, metrics, config, lineage, gate decision, model card) and publish it.

    Runs only after the gate passed. Then points ``registry.promote_to`` (production by default) at the
    new version, recorded in the registry's audit log.

    Args:
        config: The whole kfkit config; ``registry``, ``model.name`` and ``drift`` are used.
        prepared: Output of prep (schema, stats, and the drift reference sample).
        model: Output of train.
        evaluation: Output of evaluate (metrics.json with the operating threshold).
        gate: Output of gate (gate.json, published with the version).
        run_id: Pipeline run that produced the version (recorded in lineage, manifest and model card).

    Returns:
        model_uri: Storage URI of the new version (what a server or an InferenceService loads).
        version: Its version number.
        promoted_to: The alias now pointing at it ('' if registry.promote_to is unset).
    """
    import tempfile
    from collections import namedtuple

    from kfkit.config import from_dict
    from kfkit.registry.publish import assemble, promote_release, publish_release

    cfg = from_dict(config)
    with tempfile.TemporaryDirectory(prefix="kfkit-release-") as staging:
        assemble(cfg, model_dir=model.path, prepared_dir=prepared.path, evaluation_dir=evaluation.path,
                 out_dir=staging, run_id=run_id, gate_path=gate.path)  # fmt: skip
        version = publish_release(cfg, staging, run_id=run_id)
    print(f"[publish] {version.name} version {version.version} -> {version.uri}")
    event = promote_release(cfg, version, run_id=run_id)
    if event is not None:
        was = f" (was version {event.from_version})" if event.from_version else ""
        print(f"[publish] {event.alias} -> version {event.to_version}{was}")
    outputs = namedtuple("PublishOutputs", ["model_uri", "version", "promoted_to"])
    return outputs(version.uri, version.version, event.alias if event else "")
