"""The tabular MLP, and its on-disk form: safetensors weights plus a JSON spec (never a pickle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ModelLoadError

if TYPE_CHECKING:  # torch is heavy: import it only where a model is built
    import numpy as np
    import torch

    from kfkit.config import KfkitConfig

__all__ = [
    "ModelSpec",
    "build_model",
    "save_model",
    "load_model",
    "load_spec",
    "spec_from_config",
    "load_scorer",
    "predict_proba",
    "WEIGHTS_FILE",
    "SPEC_FILE",
    "SAVED_MODEL_DIR",
    "EXPORT_FILE",
    "export_model",
    "load_exported",
]

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "model.json"
# TensorFlow models: a SavedModel whose `serving_default` signature maps `features` (float32, [batch,
# n_features]) to `probability` (float32, [batch]); model.json sits beside it as for PyTorch models.
SAVED_MODEL_DIR = "saved_model"
# PyTorch models also carry their graph for serving without kfkit's Python: a torch.export program
# (torch.export.save) taking float32 [batch, n_features] raw features, any batch size, returning logits [batch].
EXPORT_FILE = "model.pt2"


@dataclass
class ModelSpec:
    """Everything needed to rebuild and call a saved model."""

    name: str
    """Registry and endpoint name."""
    feature_names: list[str]
    """Input columns, in the order the model expects them."""
    hidden_dims: list[int]
    """Hidden layer widths."""
    dropout: float = 0.0
    """Dropout used in training (inactive when serving)."""
    threshold: float = 0.5
    """Probability at or above which the predicted label is 1."""
    label: str = "label"
    """Name of the predicted column."""
    framework: str = "pytorch"
    """Framework that reads the weights."""
    architecture: str = "mlp"
    """Network family."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (dataset, epochs, kfkit version)."""

    @property
    def input_dim(self) -> int:
        """Number of input features."""
        return len(self.feature_names)


def spec_from_config(
    cfg: KfkitConfig, feature_names: list[str], label: str, *, framework: str = "pytorch", **extra: Any
) -> ModelSpec:
    """The spec a training run of ``cfg`` saves beside its weights (either framework).

    ``extra`` adds provenance (world size, strategy) to the dataset and epoch count recorded always.
    """
    return ModelSpec(
        name=cfg.model.name,
        feature_names=list(feature_names),
        hidden_dims=list(cfg.model.hidden_dims),
        dropout=cfg.model.dropout,
        threshold=cfg.evaluation.threshold,
        label=label,
        framework=framework,
        extra={"dataset": cfg.dataset.kind, "epochs": cfg.training.epochs, **extra},
    )


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
    (out / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
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
    try:
        spec = ModelSpec(**json.loads(spec_path.read_text()))
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{spec_path} is not a kfkit model spec: {e}") from e
    model = build_model(spec)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except (RuntimeError, OSError) as e:
        raise ModelLoadError(f"{weights_path} does not match {spec_path}: {e}") from e
    model.eval()
    return model, spec


def load_spec(model_dir: str | Path) -> ModelSpec:
    """Read ``model.json`` of a saved model of any framework.

    Raises:
        ModelLoadError: the spec is missing or malformed.
    """
    spec_path = Path(model_dir) / SPEC_FILE
    if not spec_path.is_file():
        raise ModelLoadError(f"{spec_path} is missing: is {model_dir} a kfkit model directory?")
    try:
        return ModelSpec(**json.loads(spec_path.read_text()))
    except (TypeError, ValueError) as e:
        raise ModelLoadError(f"{spec_path} is not a kfkit model spec: {e}") from e


def load_scorer(model_dir: str | Path) -> tuple[Callable[[np.ndarray], np.ndarray], ModelSpec]:
    """A function from a 2-D float array to positive-class probabilities, for a model of any framework.

    Evaluation, the gate and the smoke test score through this, so a TensorFlow model is measured
    exactly like a PyTorch one.

    Raises:
        ModelLoadError: the folder is not a loadable kfkit model.
    """
    spec = load_spec(model_dir)
    if spec.framework == "tensorflow":
        from kfkit.model.keras import load_tf_scorer  # TensorFlow is heavy: only for TF models

        return load_tf_scorer(model_dir), spec
    model, spec = load_model(model_dir)
    return (lambda features: predict_proba(model, features)), spec


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
