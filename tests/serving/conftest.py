"""Serving fixtures: a small random MLP with non-trivial standardisation, published to a registry."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kfkit.model import ModelSpec, build_model, predict_proba, save_model
from kfkit.registry import publish

N_FEATURES = 30
FEATURE_NAMES = [f"x{i:02d}" for i in range(N_FEATURES)]


def _publish_random_mlp(root: Path, *, seed: int, n_rows: int, threshold: float = 0.5) -> SimpleNamespace:
    torch.manual_seed(0)
    spec = ModelSpec(name="test-mlp", feature_names=FEATURE_NAMES, hidden_dims=[16, 8], threshold=threshold)
    net = build_model(spec)
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 10, N_FEATURES).astype(np.float32)
    std = rng.uniform(0.5, 5, N_FEATURES).astype(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(mean))
        net.feature_std.copy_(torch.from_numpy(std))
    net.eval()
    model_dir = save_model(net, spec, root / "model")
    version = publish(model_dir, registry_uri=f"file://{root}/reg", name="test-mlp")
    rows = (mean + std * rng.normal(0, 3, (n_rows, N_FEATURES))).astype(np.float32)
    return SimpleNamespace(
        uri=version.uri, model=net, spec=spec, model_dir=model_dir, root=root, rows=rows,
        expected=predict_proba(net, rows),
    )  # fmt: skip


@pytest.fixture(scope="session")
def publish_random_mlp(tmp_path_factory):
    """Call with (name, seed=..., n_rows=..., threshold=...) for a published random MLP and rows to score."""

    def _make(name: str, *, seed: int, n_rows: int, threshold: float = 0.5) -> SimpleNamespace:
        return _publish_random_mlp(tmp_path_factory.mktemp(name), seed=seed, n_rows=n_rows, threshold=threshold)

    return _make
