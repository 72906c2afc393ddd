"""The benchmark model: a 30→64→1 MLP (fixed seed) published to a file:// registry, and its TensorFlow twin."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from kfkit.errors import ServingError

__all__ = ["MODEL_NAME", "N_FEATURES", "HIDDEN", "BenchModel", "publish_model", "publish_tf_twin"]

MODEL_NAME = "bench-mlp"
N_FEATURES = 30
HIDDEN = [64]


@dataclass
class BenchModel:
    """A published benchmark model and the rows every server is checked and loaded with."""

    uri: str
    """Published version URI, as kfkit's server loads it."""
    model_dir: Path
    """The version's folder (MLServer's runtime and the forward probe read it)."""
    rows: Any
    """float32 (64, 30): request rows."""
    expected: Any
    """float32 (64,): in-process probabilities of ``rows``."""


def publish_model(root: Path) -> BenchModel:
    """The benchmark model: 30→64→1 MLP with non-trivial standardisation, fixed seed, published under ``root``."""
    import numpy as np
    import torch

    from kfkit.data.sources import synthetic_fraud
    from kfkit.model import ModelSpec, build_model, predict_proba, save_model
    from kfkit.registry import publish_folder

    torch.manual_seed(0)
    names = [f"v{i:02d}" for i in range(1, N_FEATURES - 1)] + ["amount", "hour"]
    spec = ModelSpec(name=MODEL_NAME, feature_names=names, hidden_dims=HIDDEN, threshold=0.5)
    net = build_model(spec)
    frame = synthetic_fraud(n_rows=2000, seed=7)
    data = frame[names].to_numpy(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(data.mean(0)))
        net.feature_std.copy_(torch.from_numpy(data.std(0) + 1e-6))
    net.eval()
    model_dir = save_model(net, spec, root / "model")
    version = publish_folder(model_dir, registry_uri=f"file://{root / 'registry'}", name=MODEL_NAME)
    # Four decimals: realistic request sizes, and the JSON text is then exactly these float32 values' source.
    rows = np.round(data[:64], 4).astype(np.float32)
    return BenchModel(uri=version.uri, model_dir=Path(version.path), rows=rows, expected=predict_proba(net, rows))


def publish_tf_twin(root: Path, model: BenchModel) -> BenchModel:
    """The same MLP (same weights) as a TensorFlow SavedModel, published to its own registry.

    kfkit serves SavedModels through TensorFlow's function call, which costs about 300 µs whatever the batch
    size; the batching comparison runs on both, to show what batching buys when the forward pass dominates.

    Raises:
        ServingError: the twin does not answer the PyTorch model's probabilities (1e-5).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from torch import nn

    from kfkit.model import SPEC_FILE, load_model
    from kfkit.model.keras import build_keras_mlp, export_saved_model, load_tf_scorer
    from kfkit.registry import publish_folder

    tf.config.threading.set_intra_op_parallelism_threads(1)
    net, spec = load_model(model.model_dir)
    keras_model = build_keras_mlp(
        spec.input_dim, spec.hidden_dims, 0.0, net.feature_mean.numpy(), net.feature_std.numpy()
    )
    linears = [layer for layer in net.net if isinstance(layer, nn.Linear)]
    dense = [keras_model.get_layer(f"dense_{i}") for i in range(len(spec.hidden_dims))] + [
        keras_model.get_layer("logit")
    ]
    for torch_layer, keras_layer in zip(linears, dense, strict=True):
        keras_layer.set_weights([torch_layer.weight.detach().numpy().T, torch_layer.bias.detach().numpy()])
    out = root / "tf-model"
    export_saved_model(keras_model, spec.input_dim, out)
    twin = replace(spec, framework="tensorflow")
    (out / SPEC_FILE).write_text(json.dumps(asdict(twin), indent=2, sort_keys=True) + "\n")
    expected = np.asarray(load_tf_scorer(out)(model.rows), dtype=np.float32)
    if not np.allclose(expected, model.expected, rtol=0, atol=1e-5):
        raise ServingError(
            f"the TensorFlow twin disagrees with the PyTorch model: {expected[:4]} vs {model.expected[:4]}"
        )
    version = publish_folder(out, registry_uri=f"file://{root / 'registry-tf'}", name=MODEL_NAME)
    return BenchModel(uri=version.uri, model_dir=Path(version.path), rows=model.rows, expected=expected)
