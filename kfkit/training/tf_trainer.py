"""TensorFlow/Keras training of the tabular MLP (``model.framework=tensorflow``), exported as a SavedModel.

The network, standardisation, class weighting, optimiser and schedule mirror the PyTorch trainer
(:class:`~kfkit.training.ddp.DDPTrainer`), and so do the phases of :class:`KerasTrainer`, so the two
frameworks are interchangeable behind the same config and the same evaluation.

Distribution: training runs under ``tf.distribute.MultiWorkerMirroredStrategy``. With no ``TF_CONFIG``
in the environment (a laptop, a kfp step's pod) that is one worker using every local device (all local
GPUs, or the CPU). On a cluster, each worker process gets ``TF_CONFIG`` — the JSON Kubeflow's TFJob
writes, ``{"cluster": {"worker": ["host0:2222", "host1:2222"]}, "task": {"type": "worker", "index": 0}}`` —
runs :func:`train_tf` on the same prepared data and the same ``out_dir``, and the strategy all-reduces
gradients across them; the chief (``chief`` task, else ``worker`` 0) alone writes the model, the others
write to a scratch folder that is deleted, as TensorFlow's multi-worker saving guide requires.
``training.nproc`` (torchrun processes) does not apply: one TF process drives all devices of its node.

A little over 400 lines: the Keras trainer keeps the DDP trainer's phases and their state in one class,
as :mod:`kfkit.training.ddp` does.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError, TrainingError

# build_keras_mlp and export_saved_model live in kfkit.model.keras; the benchmark still imports them from here.
from kfkit.model.keras import build_keras_mlp, export_saved_model

if TYPE_CHECKING:
    import numpy as np

    from kfkit.config import KfkitConfig
    from kfkit.model import ModelSpec

__all__ = ["train_tf", "fit_tf_model", "KerasTrainer", "TfRun", "export_saved_model", "build_keras_mlp"]

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
    from kfkit.model.keras import save_keras_model
    from kfkit.training.outputs import TRAINING_SUMMARY_FILE

    run = fit_tf_model(prepared_dir, cfg)
    out = Path(out_dir)
    # Non-chief workers must still save (saving may run collective ops), but into a throwaway folder.
    target = out if run.is_chief else Path(tempfile.mkdtemp(prefix="kfkit-tf-worker-"))
    try:
        save_keras_model(run.model, run.spec, target)
        (target / TRAINING_SUMMARY_FILE).write_text(json.dumps(run.summary, indent=2) + "\n")
    except (OSError, ValueError) as e:
        raise TrainingError(f"could not write the TensorFlow model to {target}: {e}") from e
    finally:
        if target != out:
            shutil.rmtree(target, ignore_errors=True)
    return run.summary


def fit_tf_model(prepared_dir: str | Path, cfg: KfkitConfig) -> TfRun:
    """Train the Keras MLP on the prepared splits and return it in memory (nothing is written).

    Raises:
        ConfigError: training.device or training.precision cannot be met on this machine.
        TrainingError: the loss became NaN.
    """
    return KerasTrainer(cfg, Path(prepared_dir)).run()


class KerasTrainer:
    """One worker's share of a MultiWorkerMirroredStrategy run, in the DDP trainer's phases.

    ``setup`` (devices, precision, seed, strategy, data, model, optimizer), then per epoch
    ``train_epoch`` and ``validate`` (every worker validates, on the same data, so all reach the same
    early-stopping verdict without a broadcast), and ``finish`` (keep the best epoch, spec and summary).
    There is no ``restore`` or ``checkpoint``: a killed TensorFlow run starts again.
    """

    def __init__(self, cfg: KfkitConfig, prepared_dir: Path) -> None:
        self.cfg, self.tc = cfg, cfg.training
        self.prepared_dir = prepared_dir
        self.history: list[dict] = []
        self.best_weights: list | None = None
        self.started = 0.0
        """perf_counter() when the first epoch began."""

    def run(self) -> TfRun:
        """Train to the last epoch (or an early stop) and return the model with its spec and summary."""
        self.setup()
        self._announce()
        self.started = time.perf_counter()
        for epoch in range(self.tc.epochs):
            train_loss, rate = self.train_epoch(epoch)
            val_loss, val_pr_auc, stop = self.validate(epoch)
            self._end_epoch(epoch, train_loss, rate, val_loss, val_pr_auc, stop)
            if stop:
                break
        return self.finish()

    def setup(self) -> None:
        """Phase 1: devices and dtype policy, seed, strategy, the splits as an input pipeline, model and optimizer."""
        import keras
        import numpy as np
        import tensorflow as tf

        from kfkit.data.prep import load_prepared
        from kfkit.training.data import positive_weight, read_split
        from kfkit.training.early_stopping import EarlyStopping
        from kfkit.training.plan import plan_training

        tc = self.tc
        self.gpus = gpus = _visible_gpus(tc.device)
        self.policy = policy = _dtype_policy(tc.precision, gpus)
        # Same seed, same run: weights, dropout masks and the shuffle order all derive from it.
        keras.utils.set_random_seed(tc.seed)
        implementation = tf.distribute.experimental.CommunicationImplementation
        self.backend = "nccl" if gpus else "ring"
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=implementation.NCCL if gpus else implementation.RING
            )
        )
        self.replicas = replicas = strategy.num_replicas_in_sync
        self.chief = _is_chief(strategy)

        prepared = load_prepared(self.prepared_dir)
        self.features, self.label = features, label = prepared.feature_names, prepared.label
        x_train, y_train = read_split(prepared.split_path("train"), features, label)
        self.x_val, self.y_val = read_split(prepared.split_path("val"), features, label)
        # The auto settings follow the splits, as in the PyTorch trainer (batch_size per replica).
        self.plan = plan_training(
            tc,
            train_rows=len(y_train),
            val_rows=len(self.y_val),
            val_positives=int(self.y_val.sum()),
            world_size=replicas,
        )
        self.cfg = self.plan.apply(self.cfg)
        self.tc = tc = self.cfg.training
        # The PyTorch trainer's rule: a higher validation PR-AUC, ties broken by a lower loss.
        self.stopper = EarlyStopping(tc.early_stopping_patience)
        mean = x_train.mean(0)
        std = np.maximum(x_train.std(0, ddof=1), 1e-6)  # unbiased, as torch.std, floored as in the torch worker
        self.pos_weight = pos_weight = positive_weight(y_train, tc.pos_weight)

        # The splits are loaded once as tensors; each step gathers a batch of shuffled indices in one op
        # (no per-row Python, no per-row tf.data element work beyond shuffling an int64 index).
        self.n_train = n_train = len(y_train)
        self.global_batch = tc.batch_size * replicas  # batch_size is per replica, as per DDP process
        self.steps_per_epoch = steps_per_epoch = -(-n_train // self.global_batch)
        x_all = tf.constant(x_train)
        y_all = tf.constant(y_train[:, None])  # [n, 1], the model's output shape
        w_all = tf.constant(np.where(y_train > 0.5, pos_weight, 1.0).astype("float32"))
        dataset = (
            tf.data.Dataset.range(n_train)
            .shuffle(n_train, seed=tc.seed, reshuffle_each_iteration=True)
            .batch(self.global_batch)  # each epoch ends on its own (partial) batch, then the next reshuffles
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
            self.model = model = build_keras_mlp(
                len(features), list(self.cfg.model.hidden_dims), self.cfg.model.dropout, mean, std, policy
            )
            self.schedule = keras.optimizers.schedules.CosineDecay(
                tc.learning_rate, decay_steps=max(1, tc.epochs * steps_per_epoch)
            )
            optimizer: Any = keras.optimizers.AdamW(learning_rate=self.schedule, weight_decay=tc.weight_decay)
            if policy == "mixed_float16":  # fp16 gradients underflow without loss scaling
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            optimizer.build(model.trainable_variables)
        self.optimizer = optimizer
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

        self._run_steps = _run_steps

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """Phase 2: one epoch over the training split.

        Returns:
            Over all replicas: the epoch's mean training loss, and samples per second.

        Raises:
            TrainingError: the training loss is not finite.
        """
        import numpy as np
        import tensorflow as tf

        epoch_start, loss_sum, rows = time.perf_counter(), 0.0, 0.0
        for begin in range(0, self.steps_per_epoch, _STEPS_PER_EXECUTION):
            steps = tf.constant(min(_STEPS_PER_EXECUTION, self.steps_per_epoch - begin))
            chunk_loss, chunk_rows = self._run_steps(steps)
            loss_sum, rows = loss_sum + float(chunk_loss), rows + float(chunk_rows)
        elapsed = time.perf_counter() - epoch_start
        train_loss = loss_sum / max(rows, 1.0)
        if not np.isfinite(train_loss):
            raise TrainingError(
                f"training loss is {train_loss} at epoch {epoch + 1}; lower training.learning_rate "
                f"(now {self.tc.learning_rate}) or check the data for extreme values"
            )
        return train_loss, rows / max(elapsed, 1e-9)

    def validate(self, epoch: int) -> tuple[float, float, bool]:
        """Phase 3: validation loss and PR-AUC, and the early-stopping verdict (the best weights are kept).

        Returns:
            Validation loss, validation PR-AUC, and whether to stop now.
        """
        from sklearn.metrics import average_precision_score

        logits = _logits(self.model, self.x_val)
        y_val = self.y_val
        one_class = not 0 < y_val.sum() < len(y_val)
        val_pr_auc = float("nan") if one_class else float(average_precision_score(y_val, logits))
        val_loss = _weighted_bce(logits, y_val, self.pos_weight)
        if self.stopper.update(epoch + 1, val_pr_auc, val_loss) and self.tc.restore_best_weights:
            self.best_weights = self.model.get_weights()
        return val_loss, val_pr_auc, self.stopper.should_stop

    def finish(self) -> TfRun:
        """Phase 4: keep the best epoch's weights; the spec and summary to write beside them."""
        from kfkit.model import spec_from_config

        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)  # publish the best validation epoch (restore_best_weights)
        spec = spec_from_config(
            self.cfg,
            self.features,
            self.label,
            framework="tensorflow",
            world_size=self.replicas,
            strategy="MultiWorkerMirroredStrategy",
        )
        summary = {
            "framework": "tensorflow",
            "strategy": "MultiWorkerMirroredStrategy",
            "world_size": self.replicas,
            "backend": self.backend,
            "device": f"gpu:{len(self.gpus)}" if self.gpus else "cpu",
            "precision": self.policy,
            "pos_weight": self.pos_weight,
            "seconds": time.perf_counter() - self.started,
            "epochs_run": len(self.history),
            "best_epoch": self.stopper.best_epoch,
            "best_val_pr_auc": self.stopper.best_score if self.stopper.best_epoch else None,
            "published_epoch": self.stopper.best_epoch if self.best_weights is not None else len(self.history),
            "settings": self.plan.settings(),
            "stopped_early": len(self.history) < self.tc.epochs,
            "history": self.history,
        }
        return TfRun(self.model, spec, summary, self.chief)

    def _announce(self) -> None:
        if self.chief:
            if line := self.plan.describe(self.n_train, self.replicas):
                print(line, flush=True)
            print(
                f"[train] tensorflow MultiWorkerMirroredStrategy: {self.replicas} replica(s), "
                f"{'GPU' if self.gpus else 'CPU'}, {self.policy}, global batch {self.global_batch}",
                flush=True,
            )

    def _end_epoch(
        self, epoch: int, train_loss: float, rate: float, val_loss: float, val_pr_auc: float, stop: bool
    ) -> None:
        """Record the epoch in the history and log it."""
        tc = self.tc
        record = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_pr_auc": val_pr_auc,
            "lr": float(self.schedule(self.optimizer.iterations)),
            "samples_per_s": rate,
        }
        self.history.append(record)
        if not self.chief:
            return
        if stop or epoch == 0 or epoch + 1 == tc.epochs or (epoch + 1) % max(1, tc.log_every) == 0:
            print(
                f"[train] epoch {epoch + 1:>3}/{tc.epochs}  train_loss {train_loss:.4f}  "
                f"val_loss {val_loss:.4f}  val_pr_auc {val_pr_auc:.4f}  "
                f"{rate:,.0f} samples/s ({self.replicas} replica(s), tensorflow {self.backend})",
                flush=True,
            )
        if stop:
            print(f"[train] early stop: no better val_pr_auc for {tc.early_stopping_patience} epochs", flush=True)


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
