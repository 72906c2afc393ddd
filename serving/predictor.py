"""The one in-memory copy of the served model (PyTorch or TensorFlow), scored in batches off the event loop.

Every front (REST V1/V2, V2 gRPC, TF Serving gRPC) decodes its own wire format and scores through
:meth:`KfkitPredictor.score`, via :class:`kfkit.serving.dataplane.DataPlane`. The class is a ``kserve.Model`` so
that KServe's server lists it and answers its health and readiness routes; KServe's ``predict`` hook is not
used: no request reaches the model through KServe's own request path.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kserve
import numpy as np

from kfkit import errors
from kfkit.config import ServingConfig
from kfkit.model.names import INPUT_NAME, V2_OUTPUTS
from kfkit.serving.batching import AdaptiveBatcher

if TYPE_CHECKING:
    from kfkit.model import ModelSpec
    from kfkit.serving.metrics import ServerMetrics

__all__ = ["KfkitPredictor", "FRAMEWORKS"]

FRAMEWORKS = ("pytorch", "tensorflow")
"""Model frameworks the predictor serves (``framework`` in model.json)."""

_DEFAULTS = ServingConfig()


class KfkitPredictor(kserve.Model):
    """Serves one kfkit model version: raw float features in, positive-class probability and label out.

    The model runs on one worker thread behind an :class:`~kfkit.serving.batching.AdaptiveBatcher`, so the
    event loop keeps parsing requests while a batch is scored and concurrent requests share forward passes.
    """

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        *,
        num_threads: int | None = None,
        max_batch_size: int = _DEFAULTS.max_batch_size,
        max_batch_latency_ms: float = _DEFAULTS.max_batch_latency_ms,
        model_version: str | None = None,
        metrics: ServerMetrics | None = None,
    ) -> None:
        """Create the predictor; call :meth:`load` before serving.

        Args:
            name: Endpoint name (``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``).
            model_dir: A verified model folder (``model.json`` plus ``model.safetensors`` or ``saved_model/``).
            num_threads: torch intra-op threads for this process; None leaves torch's default.
            max_batch_size: Most rows one forward pass takes from concurrent requests (1 = no batching).
            max_batch_latency_ms: Longest a request waits for others to join its batch.
            model_version: Version reported in V2 answers; default: the ``version`` in the folder's manifest.
            metrics: Where forward passes are observed (rows, requests, time).
        """
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.num_threads = num_threads
        self.max_batch_size = max_batch_size
        self.max_batch_latency_ms = max_batch_latency_ms
        self.model_version = model_version
        self.model_digest = ""
        self.metrics = metrics
        self.spec: ModelSpec | None = None
        self._batcher: AdaptiveBatcher | None = None
        self._score_rows: Any = None
        self._threshold = 0.5

    @property
    def framework(self) -> str:
        """``pytorch`` or ``tensorflow`` (empty before :meth:`load`)."""
        return self.spec.framework if self.spec is not None else ""

    def load(self) -> bool:
        """Load the model, start its worker thread, and score one row there so the first request is not slow.

        Returns:
            True once the model is ready.

        Raises:
            kfkit.errors.ModelLoadError: the folder is not a loadable kfkit model.
        """
        from kfkit.model import load_spec

        spec = load_spec(self.model_dir)
        if spec.framework not in FRAMEWORKS:
            raise errors.ModelLoadError(
                f"{self.model_dir}: model.json says framework={spec.framework!r}; "
                f"kfkit serves {' or '.join(FRAMEWORKS)}"
            )
        if spec.framework == "pytorch" and self.num_threads:
            import torch

            torch.set_num_threads(self.num_threads)  # process-wide; the worker thread runs every forward pass
        self._score_rows, self.spec = _load_scorer(self.model_dir, spec.framework)
        self._threshold = float(self.spec.threshold)
        self._read_manifest()
        self._batcher = AdaptiveBatcher(
            self._forward,
            max_batch_size=self.max_batch_size,
            max_batch_latency_ms=self.max_batch_latency_ms,
            on_batch=self.metrics.batch if self.metrics is not None else None,
        )
        self._batcher.run_sync(np.zeros((1, self.spec.input_dim), dtype=np.float32))
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Stop the worker thread (KServe calls this when it unloads the model)."""
        if self._batcher is not None:
            self._batcher.close()
        self.ready = False

    @property
    def batcher(self) -> AdaptiveBatcher:
        """The batcher every front scores through (its ``submit`` for coroutines, ``submit_blocking`` for threads).

        Raises:
            RuntimeError: the model is not loaded yet.
        """
        if self._batcher is None:
            raise RuntimeError(f"model {self.name} is not loaded: call load() first")
        return self._batcher

    async def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Probabilities (float32) and labels (int64) for a validated batch, via the batcher.

        Args:
            features: Float32 array of shape (N, n_features), as :class:`~kfkit.serving.tensors.TensorChecks`
                returns it.
        """
        probabilities = await self._batcher.submit(features)
        return probabilities, (probabilities >= self._threshold).astype(np.int64)

    def get_input_types(self) -> list[dict]:
        """V2 model metadata for the one input tensor (any input name is accepted on requests)."""
        if self.spec is None:
            return []
        return [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, self.spec.input_dim]}]

    def get_output_types(self) -> list[dict]:
        """V2 model metadata for the output tensors."""
        return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in V2_OUTPUTS]

    def metadata(self) -> dict[str, Any]:
        """The V2 model metadata document (``GET /v2/models/<name>``)."""
        return {
            "name": self.name,
            "versions": [self.model_version] if self.model_version else [],
            "platform": self.framework,
            "inputs": self.get_input_types(),
            "outputs": self.get_output_types(),
            # What a client needs to build a request (column order of the one input) and read the label.
            # REST only: the V2 gRPC metadata message has no parameters field.
            "parameters": {
                "feature_names": list(self.spec.feature_names) if self.spec else [],
                "threshold": float(self._threshold),
            },
        }

    def _forward(self, features: np.ndarray) -> np.ndarray:
        """One forward pass (on the worker thread): float32 probabilities, one per row."""
        probabilities = np.asarray(self._score_rows(features), dtype=np.float32).reshape(-1)
        if len(probabilities) != len(features):
            raise errors.ModelLoadError(
                f"{self.model_dir}: the model returned {len(probabilities)} scores for {len(features)} rows; "
                "it must return one probability per row"
            )
        return probabilities

    def _read_manifest(self) -> None:
        """Version and digest of the published version, for V2 answers and the model-info metric."""
        from kfkit.registry import MANIFEST_FILE

        path = self.model_dir / MANIFEST_FILE
        if not path.is_file():
            return
        data = path.read_bytes()
        try:
            manifest = json.loads(data)
            version = str(manifest["version"])
        except (ValueError, KeyError, TypeError) as e:
            raise errors.ModelLoadError(f"{path} is unreadable: {e}") from e
        # The manifest's own digest covers every file's sha256; older manifests have none: hash the file.
        digest = manifest.get("digest") if isinstance(manifest.get("digest"), str) else hashlib.sha256(data).hexdigest()
        self.model_digest = f"sha256:{digest[:16]}"
        if self.model_version is None:
            self.model_version = version


def _load_scorer(model_dir: Path, framework: str) -> tuple[Any, ModelSpec]:
    """The scoring function for ``model_dir``: kfkit's MLP as a lean functional forward, else ``load_scorer``.

    A PyTorch MLP is rebuilt from its safetensors weights and, when its layers are kfkit's plain
    Linear/ReLU/Dropout stack, scored by :func:`_lean_mlp` (bit-identical, a third of the per-call cost of
    ``nn.Module`` dispatch); anything else goes through :func:`kfkit.model.load_scorer`.
    """
    from kfkit.model import load_model, load_scorer, predict_proba

    if framework != "pytorch":
        return load_scorer(model_dir)
    model, spec = load_model(model_dir)
    lean = _lean_mlp(model)
    if lean is not None:
        probe = np.random.default_rng(0).normal(0, 3, (5, spec.input_dim)).astype(np.float32)
        probe = probe * model.feature_std.numpy() + model.feature_mean.numpy()
        if np.array_equal(lean(probe), predict_proba(model, probe)):
            return lean, spec
    return (lambda features: predict_proba(model, features)), spec


def _lean_mlp(model: Any) -> Any:
    """``features -> probabilities`` for kfkit's TabularMLP with its weights bound once, or None for other nets.

    The same float32 operations as the module (standardise, Linear/ReLU blocks, sigmoid), called directly:
    no module dispatch, hooks or inactive Dropout per call. The weights carry no gradient, so no autograd
    context is needed either.
    """
    import torch
    from torch import nn

    layers = list(getattr(model, "net", []))
    mean, std = getattr(model, "feature_mean", None), getattr(model, "feature_std", None)
    if not layers or mean is None or std is None or not isinstance(layers[-1], nn.Linear):
        return None
    if not all(isinstance(layer, nn.Linear | nn.ReLU | nn.Dropout) for layer in layers):
        return None
    linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
    relus = sum(isinstance(layer, nn.ReLU) for layer in layers)
    if relus != len(linears) - 1 or linears[-1].out_features != 1:
        return None
    weights = [(layer.weight.detach().t(), layer.bias.detach()) for layer in linears]  # as F.linear: same kernel
    mean, std = mean.detach(), std.detach()
    last = len(weights) - 1

    def forward(features: np.ndarray) -> np.ndarray:
        hidden = torch.from_numpy(features).sub(mean).div_(std)
        for i, (weight, bias) in enumerate(weights):
            hidden = torch.addmm(bias, hidden, weight)
            if i < last:
                hidden.relu_()
        return hidden.squeeze_(-1).sigmoid_().numpy()

    return forward
