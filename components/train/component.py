"""train: distributed PyTorch training with torchrun (gloo on CPU, NCCL on GPU)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def train(config: dict, prepared: Input[Dataset], model: Output[Model], training_metrics: Output[Metrics]):
    """Train the MLP on the prepared splits with ``training.nproc`` DDP processes.

    Args:
        config: The whole kfkit config; ``model`` and ``training`` sections are used.
        prepared: Output of prep.
        model: Output folder: model.safetensors, model.json, training.json.
        training_metrics: Final losses and throughput.
    """
    from kfkit.config import from_dict
    from kfkit.training.launcher import train as run_training

    cfg = from_dict(config)
    summary = run_training(prepared.path, cfg, model.path)
    last = summary["history"][-1]
    model.metadata.update(
        {"framework": cfg.model.framework, "name": cfg.model.name, "world_size": summary["world_size"]}
    )
    for key in ("train_loss", "val_loss", "samples_per_s"):
        training_metrics.log_metric(key, float(last[key]))
    training_metrics.log_metric("seconds", float(summary["seconds"]))
