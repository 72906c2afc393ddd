"""TensorFlow/Keras training of the tabular MLP (``model.framework=tensorflow``), exported as a SavedModel.

The network, standardisation, class weighting, optimiser and schedule mirror the PyTorch worker, so the
two frameworks are interchangeable behind the same config and the same evaluation.

Distribution: training runs under ``tf.distribute.MultiWorkerMirroredStrategy``. With no ``TF_CONFIG``
in the environment (a laptop, a kfp step's pod) that is one worker using every local device (all local
GPUs, or the CPU). On a cluster, each worker process gets ``TF_CONFIG`` — the JSON Kubeflow's TFJob
writes, ``{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}`` —
runs :func:`train_tf` on the same prepared data and the same ``out_dir``, and the strategy all-reduces
gradients across them; the chief (``chief`` task, else ``worker`` 0) alone writes the model, the others
write to a scratch folder that is deleted, as TensorFlow's multi-worker saving guide requires.
``training.nproc`` (torchrun processes) does not apply: one TF process drives all devices of its node.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError, TrainingError

if TYPE_CHECKING:
    import numpy as np

    from kfkit.config import KfkitConfig
    from kfkit.model import ModelSpec

__all__ = ["train_tf", "fit_tf_model", "export_saved_model", "build_keras_mlp", "TfRun"]

# Rows per forward pass when scoring the validation split (bounded memory on large splits).
_VAL_CHUNK = 65_536
# Optimizer steps run per compiled call.
_STEPS_PER_EXECUTION = 32


@dataclass
class TfRun:
    """What :func:`fit_tf_model` produced."""

    model: Any
    """Keras model mapping raw features to logits of shape [rows, 1]."""
    spec: ModelSpec
    """The model.json content."""
    summary: dict
    """The training.json content (same keys as the PyTorch worker's, plus framework/strategy)."""
    is_chief: bool
    """Whether this process writes the model (always true without TF_CONFIG)."""


def build_keras_mlp(
    n_features: int,
    hidden_dims: list[int],
    dropout: float,
    mean: np.ndarray,
    std: np.ndarray,
    dtype_policy: str = "float32",
) -> Any:
    """The Keras twin of :func:`kfkit.model.build_model`: standardise, Dense-ReLU-Dropout blocks, one logit.

    The model maps float32 ``[batch, n_features]`` raw features to logits of shape ``[batch, 1]``.

    Standardisation uses fixed training-split statistics inside the model, so the exported model takes
    raw features and no separate scaler can drift out of sync. The output layer stays float32 under
    mixed precision so logits (and the served probabilities) are never rounded to 16 bits.
    """
    import keras

    inputs = keras.Input(shape=(n_features,), dtype="float32", name="features")
    x = keras.layers.Normalization(mean=mean, variance=std.astype("float64") ** 2, name="standardise")(inputs)
    for index, width in enumerate(hidden_dims):
        x = keras.layers.Dense(width, activation="relu", dtype=dtype_policy, name=f"dense_{index}")(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
    # Logits stay [batch, 1]: Keras losses average over the last axis, so a 1-D output would be
    # averaged over the batch before the per-row (class) weights are applied, silently dropping them.
    logits = keras.layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(inputs, logits, name="tabular_mlp")


def _dtype_policy(precision: str, gpus: list) -> str:
    """Keras dtype policy for training.precision: bf16 by default on a GPU that supports it, fp32 on CPU."""
    import tensorflow as tf

    if precision == "fp32":
        return "float32"
    if precision == "bf16":
        return "mixed_bfloat16"
    if precision == "fp16":
        if not gpus:
            raise ConfigError("training.precision=fp16 needs a GPU; use training.precision=fp32 (or bf16) on CPU")
        return "mixed_float16"
    if gpus:  # auto: bf16 where the GPU computes it natively (compute capability 8.0+, Ampere on)
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        if tuple(capability) >= (8, 0):
            return "mixed_bfloat16"
    return "float32"


def _visible_gpus(device: str) -> list:
    """The GPUs training may use, after applying training.device (cpu hides them, cuda requires one)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" and gpus:
        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError as e:  # TensorFlow already initialised its devices in this process
            raise TrainingError(f"training.device=cpu but TensorFlow already uses {len(gpus)} GPU(s): {e}") from e
        return []
    if device == "cuda" and not gpus:
        raise ConfigError("training.device=cuda but TensorFlow sees no GPU; use training.device=auto or cpu")
    return gpus


def _is_chief(strategy: Any) -> bool:
    resolver = strategy.cluster_resolver
    task_type = getattr(resolver, "task_type", None)
    if task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and resolver.task_id == 0 and not has_chief


def _load_split(path: Path, features: list[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    frame = pd.read_parquet(path, columns=[*features, label])
    return frame[features].to_numpy(dtype="float32"), frame[label].to_numpy(dtype="float32")


def _weighted_bce(logits: np.ndarray, y: np.ndarray, pos_weight: float) -> float:
    """Mean binary cross-entropy with positive rows weighted, as BCEWithLogitsLoss(pos_weight) computes it."""
    import numpy as np

    log_p = -np.logaddexp(0.0, -logits)  # log sigmoid, stable for large |logits|
    log_not_p = -np.logaddexp(0.0, logits)
    return float(np.mean(-(pos_weight * y * log_p + (1.0 - y) * log_not_p)))


def _logits(model: Any, x: np.ndarray) -> np.ndarray:
    import numpy as np

    parts = [np.asarray(model(x[i : i + _VAL_CHUNK], training=False)).reshape(-1) for i in range(0, len(x), _VAL_CHUNK)]
    return np.concatenate(parts).astype("float64") if parts else np.zeros(0)


def fit_tf_model(prepared_dir: str | Path, cfg: KfkitConfig) -> TfRun:
    """Train the Keras MLP on the prepared splits and return it in memory (nothing is written).

    Raises:
        ConfigError: training.device or training.precision cannot be met on this machine.
        TrainingError: the loss became NaN.
    """
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.metrics import average_precision_score

    from kfkit.data.prep import load_prepared
    from kfkit.model import spec_from_config
    from kfkit.training.early_stopping import EarlyStopping

    train_cfg = cfg.training
    gpus = _visible_gpus(train_cfg.device)
    policy = _dtype_policy(train_cfg.precision, gpus)
    # Same seed, same run: weights, dropout masks and the shuffle order all derive from it.
    keras.utils.set_random_seed(train_cfg.seed)
    implementation = tf.distribute.experimental.CommunicationImplementation
    backend = "nccl" if gpus else "ring"
    strategy = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation.NCCL if gpus else implementation.RING
        )
    )
    replicas = strategy.num_replicas_in_sync
    chief = _is_chief(strategy)

    prepared = load_prepared(prepared_dir)
    features, label = prepared.feature_names, prepared.label
    x_train, y_train = _load_split(prepared.split_path("train"), features, label)
    x_val, y_val = _load_split(prepared.split_path("val"), features, label)
    mean = x_train.mean(0)
    std = np.maximum(x_train.std(0, ddof=1), 1e-6)  # unbiased, as torch.std, floored as in the torch worker
    positives = float(y_train.sum())
    pos_weight = train_cfg.pos_weight or max(1.0, (len(y_train) - positives) / max(positives, 1.0))

    # The splits are loaded once as tensors; each step gathers a batch of shuffled indices in one op
    # (no per-row Python, no per-row tf.data element work beyond shuffling an int64 index).
    n_train = len(y_train)
    global_batch = train_cfg.batch_size * replicas  # batch_size is per replica, as per DDP process
    steps_per_epoch = -(-n_train // global_batch)
    x_all = tf.constant(x_train)
    y_all = tf.constant(y_train[:, None])  # [n, 1], the model's output shape
    w_all = tf.constant(np.where(y_train > 0.5, pos_weight, 1.0).astype("float32"))
    dataset = (
        tf.data.Dataset.range(n_train)
        .shuffle(n_train, seed=train_cfg.seed, reshuffle_each_iteration=True)
        .batch(global_batch)  # each epoch ends on its own (partial) batch, then the next reshuffles
        .map(lambda idx: (tf.gather(x_all, idx), tf.gather(y_all, idx), tf.gather(w_all, idx)))
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )
    options = tf.data.Options()
    # Each worker takes every k-th global batch, split across its replicas (in-memory data has no files).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    batches = iter(strategy.experimental_distribute_dataset(dataset.with_options(options)))

    with strategy.scope():
        model = build_keras_mlp(len(features), list(cfg.model.hidden_dims), cfg.model.dropout, mean, std, policy)
        schedule = keras.optimizers.schedules.CosineDecay(
            train_cfg.learning_rate, decay_steps=max(1, train_cfg.epochs * steps_per_epoch)
        )
        optimizer: Any = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=train_cfg.weight_decay)
        if policy == "mixed_float16":  # fp16 gradients underflow without loss scaling
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)
    per_row_loss = keras.losses.BinaryCrossentropy(from_logits=True, reduction=None)

    # A custom loop rather than Model.fit: Keras 3's fit fails under MultiWorkerMirroredStrategy with
    # more than one worker (keras-team/keras#20585). DDP semantics: each replica's loss is the mean over
    # its own rows, and the optimizer sums gradients over replicas, hence the division by `replicas`.
    def _step(x: Any, y: Any, w: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            losses = per_row_loss(y, model(x, training=True)) * w
            rows = tf.cast(tf.shape(losses)[0], tf.float32)
            loss = tf.math.divide_no_nan(tf.reduce_sum(losses), rows) / replicas
            scaled = optimizer.scale_loss(loss) if policy == "mixed_float16" else loss
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return tf.reduce_sum(losses), rows

    @tf.function
    def _run_steps(steps: Any) -> tuple[Any, Any]:
        """Several steps per call: per-call Python overhead would dominate a small MLP's steps."""
        loss_sum, rows = tf.constant(0.0), tf.constant(0.0)
        for _ in tf.range(steps):
            step_loss, step_rows = strategy.run(_step, args=next(batches))
            loss_sum += strategy.reduce(tf.distribute.ReduceOp.SUM, step_loss, axis=None)
            rows += strategy.reduce(tf.distribute.ReduceOp.SUM, step_rows, axis=None)
        return loss_sum, rows

    history: list[dict] = []
    patience = train_cfg.early_stopping_patience
    stopper = EarlyStopping(patience)  # the PyTorch worker's rule: higher PR-AUC, ties to lower loss
    best_weights = None
    if chief:
        print(
            f"[train] tensorflow MultiWorkerMirroredStrategy: {replicas} replica(s), "
            f"{'GPU' if gpus else 'CPU'}, {policy}, global batch {global_batch}",
            flush=True,
        )
    start = time.perf_counter()
    for epoch in range(train_cfg.epochs):
        epoch_start, loss_sum, rows = time.perf_counter(), 0.0, 0.0
        for begin in range(0, steps_per_epoch, _STEPS_PER_EXECUTION):
            chunk_loss, chunk_rows = _run_steps(tf.constant(min(_STEPS_PER_EXECUTION, steps_per_epoch - begin)))
            loss_sum, rows = loss_sum + float(chunk_loss), rows + float(chunk_rows)
        elapsed = time.perf_counter() - epoch_start
        train_loss = loss_sum / max(rows, 1.0)
        if not np.isfinite(train_loss):
            raise TrainingError(
                f"training loss is {train_loss} at epoch {epoch + 1}; lower training.learning_rate "
                f"(now {train_cfg.learning_rate}) or check the data for extreme values"
            )
        logits = _logits(model, x_val)
        one_class = not 0 < y_val.sum() < len(y_val)
        val_pr_auc = float("nan") if one_class else float(average_precision_score(y_val, logits))
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": _weighted_bce(logits, y_val, pos_weight),
            "val_pr_auc": val_pr_auc,
            "lr": float(schedule(optimizer.iterations)),
            "samples_per_s": rows / max(elapsed, 1e-9),
        }
        history.append(record)
        if stopper.update(epoch + 1, val_pr_auc, record["val_loss"]) and stopper.enabled:
            best_weights = model.get_weights()
        stop = stopper.should_stop
        if chief and (
            stop or epoch == 0 or epoch + 1 == train_cfg.epochs or (epoch + 1) % max(1, train_cfg.log_every) == 0
        ):
            print(
                f"[train] epoch {epoch + 1:>3}/{train_cfg.epochs}  train_loss {train_loss:.4f}  "
                f"val_loss {record['val_loss']:.4f}  val_pr_auc {val_pr_auc:.4f}  "
                f"{record['samples_per_s']:,.0f} samples/s ({replicas} replica(s), tensorflow {backend})",
                flush=True,
            )
        if stop:
            if chief:
                print(f"[train] early stop: no better val_pr_auc for {patience} epochs", flush=True)
            break
    if best_weights is not None:
        model.set_weights(best_weights)  # keep the best epoch, as early stopping promises
    spec = spec_from_config(
        cfg, features, label, framework="tensorflow", world_size=replicas, strategy="MultiWorkerMirroredStrategy"
    )
    summary = {
        "framework": "tensorflow",
        "strategy": "MultiWorkerMirroredStrategy",
        "world_size": replicas,
        "backend": backend,
        "device": f"gpu:{len(gpus)}" if gpus else "cpu",
        "precision": policy,
        "pos_weight": pos_weight,
        "seconds": time.perf_counter() - start,
        "epochs_run": len(history),
        "best_epoch": stopper.best_epoch,
        "best_val_pr_auc": stopper.best_score if stopper.best_epoch else None,
        "stopped_early": len(history) < train_cfg.epochs,
        "history": history,
    }
    return TfRun(model, spec, summary, chief)


def export_saved_model(model: Any, n_features: int, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/saved_model``: signature ``serving_default``, ``features`` -> ``probability``.

    The signature takes float32 ``[None, n_features]`` raw features and returns float32 ``[None]``
    probabilities, the layout TensorFlow Serving (and :func:`kfkit.model.keras.load_tf_scorer`) call.
    """
    import tensorflow as tf

    from kfkit.model import SAVED_MODEL_DIR

    class _Serving(tf.Module):
        def __init__(self, keras_model: Any) -> None:
            super().__init__(name="kfkit_serving")
            self.model = keras_model  # tracked: its variables are saved with the signature

        @tf.function(input_signature=[tf.TensorSpec([None, n_features], tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            logits = tf.cast(self.model(features, training=False), tf.float32)
            return {"probability": tf.sigmoid(tf.reshape(logits, [-1]))}

    path = Path(out_dir) / SAVED_MODEL_DIR
    if path.exists():
        shutil.rmtree(path)  # a SavedModel folder is written whole; never mix two exports
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _Serving(model)
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def train_tf(prepared_dir: str | Path, cfg: KfkitConfig, out_dir: str | Path) -> dict:
    """Train with Keras under MultiWorkerMirroredStrategy and write the model to ``out_dir``.

    Writes ``saved_model/`` (TensorFlow Serving layout), ``model.json`` (framework=tensorflow) and
    ``training.json`` (the summary returned). On a multi-worker cluster only the chief writes there.

    Returns:
        The training summary: world_size, backend, device, pos_weight, seconds, history (per epoch:
        epoch, train_loss, val_loss, val_pr_auc, lr, samples_per_s), best_epoch, stopped_early.

    Raises:
        ConfigError: training.device or training.precision cannot be met on this machine.
        TrainingError: the loss became NaN or the model could not be written.
    """
    from kfkit.model import SPEC_FILE
    from kfkit.training.worker import TRAINING_SUMMARY_FILE

    run = fit_tf_model(prepared_dir, cfg)
    out = Path(out_dir)
    # Non-chief workers must still save (saving may run collective ops), but into a throwaway folder.
    target = out if run.is_chief else Path(tempfile.mkdtemp(prefix="kfkit-tf-worker-"))
    try:
        export_saved_model(run.model, run.spec.input_dim, target)
        (target / SPEC_FILE).write_text(json.dumps(asdict(run.spec), indent=2, sort_keys=True) + "\n")
        (target / TRAINING_SUMMARY_FILE).write_text(json.dumps(run.summary, indent=2) + "\n")
    except (OSError, ValueError) as e:
        raise TrainingError(f"could not write the TensorFlow model to {target}: {e}") from e
    finally:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
    return run.summary
