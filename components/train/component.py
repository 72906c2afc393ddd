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
        training_metrics: Losses and val PR-AUC of the published epoch (the best validation epoch unless
            training.restore_best_weights=false), that epoch, epochs run, samples/s and seconds.
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
    history = summary["history"]
    # The epoch whose weights were written (the best validation epoch by default), not merely the last.
    epoch = summary.get("published_epoch") or len(history)
    published = history[epoch - 1]
    model.metadata.update(
        {
            "framework": cfg.model.framework,
            "name": cfg.model.name,
            "world_size": summary["world_size"],
            "epoch": epoch,
        }
    )
    for key in ("train_loss", "val_loss", "val_pr_auc"):
        training_metrics.log_metric(key, float(published[key]))
    training_metrics.log_metric("epoch", float(epoch))
    training_metrics.log_metric("epochs_run", float(len(history)))
    # Throughput over the whole run: total rows over total time of the training epochs.
    training_metrics.log_metric("samples_per_s", float(summary.get("samples_per_s") or history[-1]["samples_per_s"]))
    training_metrics.log_metric("seconds", float(summary["seconds"]))
