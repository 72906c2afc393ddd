"""train: distributed PyTorch training with torchrun (gloo on CPU, NCCL on GPU), here or as a cluster job."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from kfkit.components import KFKIT_IMAGE


@dsl.component(base_image=KFKIT_IMAGE, install_kfp_package=False)
def train(config: dict, prepared: Input[Dataset], model: Output[Model], training_metrics: Output[Metrics]):
    """Train the MLP on the prepared splits, launched as ``training.cluster.launcher`` says.

    ``local`` and ``in_pod`` run torchrun with ``training.nproc`` DDP processes in this process's
    machine or pod; ``pytorchjob`` and ``trainjob`` submit a Kubeflow job, wait for it, and copy the
    model it wrote (through the shared training volume) into ``model``.

    Args:
        config: The whole kfkit config; ``model`` and ``training`` sections are used.
        prepared: Output of prep.
        model: Output folder: model.safetensors, model.json, training.json.
        training_metrics: Final losses and throughput.
    """
    from kfkit.config import from_dict

    cfg = from_dict(config)
    launcher = cfg.training.cluster.launcher
    if launcher in ("pytorchjob", "trainjob"):
        from kfkit.training.cluster import train_on_cluster

        summary = train_on_cluster(prepared.path, cfg, model.path, kind=launcher)
    else:
        from kfkit.training.launcher import train as run_training

        summary = run_training(prepared.path, cfg, model.path)
    last = summary["history"][-1]
    model.metadata.update(
        {"framework": cfg.model.framework, "name": cfg.model.name, "world_size": summary["world_size"]}
    )
    for key in ("train_loss", "val_loss", "samples_per_s"):
        training_metrics.log_metric(key, float(last[key]))
    training_metrics.log_metric("seconds", float(summary["seconds"]))
