"""What a saved kfkit model is, whatever its framework: the file names of a model folder and its JSON spec."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ModelLoadError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = [
    "ModelSpec",
    "spec_from_config",
    "load_spec",
    "write_spec",
    "WEIGHTS_FILE",
    "SPEC_FILE",
    "SAVED_MODEL_DIR",
    "EXPORT_FILE",
]

SPEC_FILE = "model.json"
"""The spec (:class:`ModelSpec` as JSON), beside the weights of either framework."""
WEIGHTS_FILE = "model.safetensors"
"""PyTorch models: the state dict as safetensors (never a pickle)."""
EXPORT_FILE = "model.pt2"
"""PyTorch models also carry their graph for serving without kfkit's Python: a torch.export program
(``torch.export.save``) taking float32 ``[batch, n_features]`` raw features, any batch size, returning
logits ``[batch]``."""
SAVED_MODEL_DIR = "saved_model"
"""TensorFlow models: a SavedModel whose signature :data:`~kfkit.model.names.SIGNATURE_NAME` maps
:data:`~kfkit.model.names.INPUT_NAME` (float32 ``[batch, n_features]``) to
:data:`~kfkit.model.names.PROBABILITY` (float32 ``[batch]``)."""


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


def write_spec(spec: ModelSpec, out_dir: str | Path) -> Path:
    """Write ``model.json`` into ``out_dir`` (which must exist) and return its path."""
    path = Path(out_dir) / SPEC_FILE
    path.write_text(json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n")
    return path


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
