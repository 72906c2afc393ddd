"""The PyTorch tabular MLP and its files: safetensors weights plus the JSON spec (never a pickle), and its export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from kfkit.errors import ModelLoadError
from kfkit.model.spec import EXPORT_FILE, SPEC_FILE, WEIGHTS_FILE, ModelSpec, load_spec, write_spec

if TYPE_CHECKING:  # torch is heavy: import it only where a model is built
    import numpy as np
    import torch

__all__ = ["build_model", "save_model", "load_model", "predict_proba", "export_model", "load_exported"]


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """A fresh (untrained) network for ``spec``; standardisation buffers start as identity."""
    import torch
    from torch import nn

    class TabularMLP(nn.Module):
        """Standardise, then Linear-ReLU-Dropout blocks, then one logit per row."""

        def __init__(self) -> None:
            super().__init__()
            # Buffers, not parameters: fitted on the training split, saved with the weights, so the
            # served model takes raw features and no separate scaler can drift out of sync.
            self.register_buffer("feature_mean", torch.zeros(spec.input_dim))
            self.register_buffer("feature_std", torch.ones(spec.input_dim))
            layers: list[nn.Module] = []
            width = spec.input_dim
            for hidden in spec.hidden_dims:
                layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(spec.dropout)]
                width = hidden
            layers.append(nn.Linear(width, 1))
            self.net = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.feature_mean) / self.feature_std).squeeze(-1)

    return TabularMLP()


def save_model(model: torch.nn.Module, spec: ModelSpec, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``out_dir`` and return it."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE), metadata={"kfkit_spec": SPEC_FILE})
    write_spec(spec, out)
    return out


def load_model(model_dir: str | Path) -> tuple[torch.nn.Module, ModelSpec]:
    """Rebuild a saved model in eval mode on the CPU.

    Raises:
        ModelLoadError: the folder lacks the weights or spec, or they do not fit together.
    """
    from safetensors.torch import load_file

    folder = Path(model_dir)
    spec_path, weights_path = folder / SPEC_FILE, folder / WEIGHTS_FILE
    for path in (spec_path, weights_path):
        if not path.is_file():
            raise ModelLoadError(
                f"{path} is missing: is {folder} a kfkit model directory (model.json + model.safetensors)?"
            )
    spec = load_spec(folder)
    model = build_model(spec)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, OSError) as e:
        raise ModelLoadError(f"{weights_path} does not match {spec_path}: {e}") from e
    model.eval()
    return model, spec


def predict_proba(model: torch.nn.Module, features: np.ndarray) -> np.ndarray:
    """Positive-class probabilities for a 2-D float array (rows x features), as float32."""
    import numpy as np
    import torch

    with torch.inference_mode():
        logits = model(torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)))
        return torch.sigmoid(logits).numpy()


def export_model(model: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write the model's graph as ``EXPORT_FILE`` (``torch.export``, dynamic batch size) and return its path.

    The model is exported in eval mode on the CPU (dropout off), as it is served; it maps raw features
    ``float32 [batch, n_features]`` to logits ``[batch]``, like the module itself.
    """
    import torch

    model = model.cpu().eval()
    n_features = int(model.feature_mean.shape[0])
    batch = torch.export.Dim("batch", min=1)
    # A batch of 2 traces the general case; Dim(min=1) keeps batch 1 valid without specialising on it.
    program = torch.export.export(model, (torch.zeros(2, n_features),), dynamic_shapes=({0: batch},))
    path = Path(out_dir) / EXPORT_FILE
    torch.export.save(program, str(path))
    return path


def load_exported(model_dir: str | Path) -> torch.nn.Module:
    """The exported graph of a saved PyTorch model, as a callable module (raw features -> logits).

    ``torch.export.load`` falls back to unpickling for some payloads; kfkit's exports have none, so
    an archive holding any (pickled weights or constants, custom objects, sample inputs that are not
    plain tensors) is refused before it is loaded.

    Raises:
        ModelLoadError: the file is missing, holds pickled payloads, or is not a torch.export archive.
    """
    import torch

    path = Path(model_dir) / EXPORT_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: export it with kfkit.model.export_model (training writes it)")
    _refuse_pickles(path)
    try:
        return torch.export.load(str(path)).module()
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise ModelLoadError(f"{path} is not a loadable torch.export program: {e}") from e


def _refuse_pickles(path: Path) -> None:
    import io
    import pickle
    import zipfile

    import torch

    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(("weights_config.json", "constants_config.json")):
                    entries = json.loads(archive.read(name)).get("config", {}).values()
                    if any(e.get("use_pickle") or not e.get("path_name", "").startswith(("weight_", "tensor_"))
                           for e in entries):  # fmt: skip
                        raise ModelLoadError(f"{path}: {name} holds pickled or custom objects; refusing to load it")
                elif "/sample_inputs/" in name:
                    torch.load(io.BytesIO(archive.read(name)), weights_only=True)
    except (zipfile.BadZipFile, ValueError, OSError, RuntimeError, pickle.UnpicklingError) as e:
        raise ModelLoadError(f"{path} is not a safe torch.export archive: {e}") from e
