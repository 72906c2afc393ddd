"""The model artifact of either framework, and :func:`load_scorer`, which reads both; light on import.

torch and TensorFlow load only when a model is built or read. One module a job:

- :mod:`kfkit.model.names`: the input, output and signature names a model is called by.
- :mod:`kfkit.model.spec`: :class:`ModelSpec` (``model.json``) and the file names of a model folder.
- :mod:`kfkit.model.pytorch`: the MLP, its safetensors weights and its ``torch.export`` graph.
- :mod:`kfkit.model.keras`: the Keras MLP and its SavedModel.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.model.keras import build_keras_mlp, export_saved_model, load_tf_scorer, save_keras_model
from kfkit.model.pytorch import build_model, export_model, load_exported, load_model, predict_proba, save_model
from kfkit.model.spec import (
    EXPORT_FILE,
    SAVED_MODEL_DIR,
    SPEC_FILE,
    WEIGHTS_FILE,
    ModelSpec,
    load_spec,
    spec_from_config,
    write_spec,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ModelSpec",
    "build_model",
    "save_model",
    "load_model",
    "load_spec",
    "write_spec",
    "spec_from_config",
    "load_scorer",
    "predict_proba",
    "WEIGHTS_FILE",
    "SPEC_FILE",
    "SAVED_MODEL_DIR",
    "EXPORT_FILE",
    "export_model",
    "load_exported",
    "build_keras_mlp",
    "export_saved_model",
    "save_keras_model",
    "load_tf_scorer",
]


def load_scorer(model_dir: str | Path) -> tuple[Callable[[np.ndarray], np.ndarray], ModelSpec]:
    """A function from a 2-D float array to positive-class probabilities, for a model of any framework.

    Evaluation, the gate and the smoke test score through this, so a TensorFlow model is measured
    exactly like a PyTorch one.

    Raises:
        ModelLoadError: the folder is not a loadable kfkit model.
    """
    spec = load_spec(model_dir)
    if spec.framework == "tensorflow":
        return load_tf_scorer(model_dir), spec
    model, spec = load_model(model_dir)
    return (lambda features: predict_proba(model, features)), spec
