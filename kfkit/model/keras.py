"""Score with a TensorFlow model that kfkit exported: its SavedModel's ``serving_default`` signature."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import InvalidInput, ModelLoadError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["load_tf_scorer", "SIGNATURE", "INPUT_NAME", "OUTPUT_NAME"]

SIGNATURE = "serving_default"
INPUT_NAME = "features"
OUTPUT_NAME = "probability"


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

    from kfkit.model import SAVED_MODEL_DIR

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
    if SIGNATURE not in loaded.signatures:
        raise ModelLoadError(f"{path} has signatures {list(loaded.signatures)}, not {SIGNATURE!r}")
    signature = loaded.signatures[SIGNATURE]
    _, inputs = signature.structured_input_signature
    if INPUT_NAME not in inputs or OUTPUT_NAME not in signature.structured_outputs:
        raise ModelLoadError(
            f"{path} signature {SIGNATURE!r} maps {sorted(inputs)} -> {sorted(signature.structured_outputs)}; "
            f"kfkit expects {INPUT_NAME!r} -> {OUTPUT_NAME!r}"
        )
    width = inputs[INPUT_NAME].shape[-1]

    def score(features: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(features, dtype=np.float32)
        if x.ndim != 2 or (width is not None and x.shape[1] != width):
            raise InvalidInput(f"expected a 2-D array of rows x {width} features, got shape {list(x.shape)}")
        if len(x) == 0:
            return np.zeros(0, dtype=np.float32)
        # `loaded` stays referenced by this closure: dropping it would free the signature's variables.
        return np.asarray(loaded.signatures[SIGNATURE](**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME], np.float32)

    return score
