"""The Keras twin of the tabular MLP and its files: a SavedModel (``serving_default``) plus the JSON spec."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import InvalidInput, ModelLoadError
from kfkit.model.names import INPUT_NAME, PROBABILITY, SIGNATURE_NAME
from kfkit.model.spec import SAVED_MODEL_DIR, ModelSpec, write_spec

if TYPE_CHECKING:  # TensorFlow is heavy: import it only where a Keras model is built or loaded
    import numpy as np

__all__ = ["build_keras_mlp", "export_saved_model", "save_keras_model", "load_tf_scorer"]


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

    inputs = keras.Input(shape=(n_features,), dtype="float32", name=INPUT_NAME)
    x = keras.layers.Normalization(mean=mean, variance=std.astype("float64") ** 2, name="standardise")(inputs)
    for index, width in enumerate(hidden_dims):
        x = keras.layers.Dense(width, activation="relu", dtype=dtype_policy, name=f"dense_{index}")(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_{index}")(x)
    # Logits stay [batch, 1]: Keras losses average over the last axis, so a 1-D output would be
    # averaged over the batch before the per-row (class) weights are applied, silently dropping them.
    logits = keras.layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(inputs, logits, name="tabular_mlp")


def export_saved_model(model: Any, n_features: int, out_dir: str | Path) -> Path:
    """Write ``<out_dir>/saved_model``: signature ``serving_default``, ``features`` -> ``probability``.

    The signature takes float32 ``[None, n_features]`` raw features and returns float32 ``[None]``
    probabilities, the layout TensorFlow Serving (and :func:`load_tf_scorer`) call.
    """
    import tensorflow as tf

    class _Serving(tf.Module):
        def __init__(self, keras_model: Any) -> None:
            super().__init__(name="kfkit_serving")
            self.model = keras_model  # tracked: its variables are saved with the signature

        # The argument's name is the signature's input key, so it must read as INPUT_NAME does.
        @tf.function(input_signature=[tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)])
        def serve(self, features: tf.Tensor) -> dict[str, tf.Tensor]:
            logits = tf.cast(self.model(features, training=False), tf.float32)
            return {PROBABILITY: tf.sigmoid(tf.reshape(logits, [-1]))}

    path = Path(out_dir) / SAVED_MODEL_DIR
    if path.exists():
        shutil.rmtree(path)  # a SavedModel folder is written whole; never mix two exports
    path.parent.mkdir(parents=True, exist_ok=True)
    module = _Serving(model)
    tf.saved_model.save(module, str(path), signatures={SIGNATURE_NAME: module.serve})
    return path


def save_keras_model(model: Any, spec: ModelSpec, out_dir: str | Path) -> Path:
    """Write ``saved_model/`` and ``model.json`` into ``out_dir`` and return it (the twin of ``save_model``)."""
    out = Path(out_dir)
    export_saved_model(model, spec.input_dim, out)
    write_spec(spec, out)
    return out


def load_tf_scorer(model_dir: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """Load ``<model_dir>/saved_model`` and return a function from rows x features to probabilities.

    The function takes a 2-D float array and returns float32 probabilities of shape ``[rows]``, the same
    contract as the PyTorch scorer of :func:`kfkit.model.load_scorer`.

    Raises:
        ModelLoadError: the SavedModel is missing, unreadable, or lacks the ``serving_default``
            signature with a ``features`` input and a ``probability`` output.
    """
    import numpy as np
    import tensorflow as tf

    path = Path(model_dir) / SAVED_MODEL_DIR
    if not (path / "saved_model.pb").is_file():
        raise ModelLoadError(
            f"{path / 'saved_model.pb'} is missing: is {model_dir} a kfkit TensorFlow model "
            "(saved_model/ + model.json, written by model.framework=tensorflow)?"
        )
    try:
        loaded = tf.saved_model.load(str(path))
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ModelLoadError(f"{path} is not a loadable SavedModel: {e}") from e
    if SIGNATURE_NAME not in loaded.signatures:
        raise ModelLoadError(f"{path} has signatures {list(loaded.signatures)}, not {SIGNATURE_NAME!r}")
    signature = loaded.signatures[SIGNATURE_NAME]
    _, inputs = signature.structured_input_signature
    if INPUT_NAME not in inputs or PROBABILITY not in signature.structured_outputs:
        raise ModelLoadError(
            f"{path} signature {SIGNATURE_NAME!r} maps {sorted(inputs)} -> {sorted(signature.structured_outputs)}; "
            f"kfkit expects {INPUT_NAME!r} -> {PROBABILITY!r}"
        )
    width = inputs[INPUT_NAME].shape[-1]

    def score(features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or (width is not None and x.shape[1] != width):
            raise InvalidInput(f"expected a 2-D array of rows x {width} features, got shape {list(x.shape)}")
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        # `loaded` stays referenced by this closure: dropping it would free the signature's variables.
        return np.asarray(loaded.signatures[SIGNATURE_NAME](**{INPUT_NAME: tf.constant(x)})[PROBABILITY], np.float32)

    return score
