"""prep: load the configured dataset (or its Feast features), check its schema, split it and write Parquet."""

from kfp import dsl
from kfp.dsl import Dataset, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def prep(config: dict, prepared: Output[Dataset]):
    """Write train/val/test Parquet, schema.json and stats.json into the ``prepared`` folder.

    Args:
        config: The whole kfkit config (``kfkit.config.to_dict``); the ``dataset`` section is used.
        prepared: Output folder of the splits.
    """
    from kfkit.config import from_dict
    from kfkit.data.prep import prepare_run

    cfg = from_dict(config)
    result = prepare_run(cfg, prepared.path)  # pandas, Spark or a SparkApplication; Feast when features.enabled
    prepared.metadata.update({"rows": result.rows, "positives": result.positives, "label": result.label,
                              "features": len(result.feature_names)})  # fmt: skip
    print(f"[prep] {cfg.dataset.kind}: {result.rows} rows, {len(result.feature_names)} features, "
          f"positives {result.positives}")  # fmt: skip
