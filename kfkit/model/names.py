"""The names a kfkit model's inputs, outputs and signature go by, in one place (light: no torch, no tensorflow).

The names of the files in a model folder are in :mod:`kfkit.model.spec`.
"""

from __future__ import annotations

__all__ = [
    "INPUT_NAME",
    "PROBABILITY",
    "LABEL",
    "OUTPUT_NAMES",
    "V2_OUTPUTS",
    "SIGNATURE_NAME",
]

INPUT_NAME = "features"
"""The one input tensor: float32 ``[rows, n_features]`` raw features (V2 tensor name, Keras input, TF signature)."""
PROBABILITY = "probability"
"""Output: float32 ``[rows]`` probability of the positive class."""
LABEL = "label"
"""Output: int64 ``[rows]`` 0/1 decision at the published threshold."""
OUTPUT_NAMES = (PROBABILITY, LABEL)
"""Every output, in the order the servers answer them."""
V2_OUTPUTS = ((PROBABILITY, "FP32"), (LABEL, "INT64"))
"""Open Inference Protocol name and datatype of each output."""
SIGNATURE_NAME = "serving_default"
"""The SavedModel signature a TensorFlow model is served by (and TF Serving clients ask for)."""
