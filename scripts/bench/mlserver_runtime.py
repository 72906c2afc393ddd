"""The peer in ``kfkit bench serve``: an MLServer 1.7.1 runtime that serves a kfkit MLP's exact weights.

This file runs inside ``.venv-mlserver`` (MLServer cannot share kserve 0.20's environment), never in kfkit's
own: the bench (``servers.mlserver_server``) copies it next to MLServer's ``model-settings.json`` and names it
as the implementation. It imports nothing from kfkit or from this folder and rebuilds the network from
``model.json`` + ``model.safetensors`` the way ``kfkit.model.build_model`` does, so both servers compute the
same function; the bench checks that they answer the same probabilities before it measures anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri
from safetensors.torch import load_file


class KfkitMLP(MLModel):
    """Standardise, Linear-ReLU blocks, one logit, sigmoid: probability (FP32 [N]) and label (INT64 [N])."""

    async def load(self) -> bool:
        """Rebuild the MLP from the folder ``parameters.uri`` names; one torch thread, as the kfkit server."""
        torch.set_num_threads(1)
        folder = Path(await get_model_uri(self._settings))
        spec = json.loads((folder / "model.json").read_text())
        state = load_file(str(folder / "model.safetensors"))
        layers: list[torch.nn.Module] = []
        width = len(spec["feature_names"])
        for hidden in spec["hidden_dims"]:
            layers += [torch.nn.Linear(width, hidden), torch.nn.ReLU()]
            width = hidden
        layers.append(torch.nn.Linear(width, 1))
        net = torch.nn.Sequential(*layers)
        # kfkit's state dict names the Sequential "net.<index>"; dropout layers are absent here (eval mode
        # makes them the identity), so map kfkit's indices (Linear, ReLU, Dropout per block) onto ours.
        linear_keys = sorted({int(k.split(".")[1]) for k in state if k.startswith("net.")})
        ours = [i for i, m in enumerate(net) if isinstance(m, torch.nn.Linear)]
        mapped = {}
        for theirs, mine in zip(linear_keys, ours, strict=True):
            mapped[f"{mine}.weight"] = state[f"net.{theirs}.weight"]
            mapped[f"{mine}.bias"] = state[f"net.{theirs}.bias"]
        net.load_state_dict(mapped)
        net.eval()
        self._net = net
        self._mean = state["feature_mean"]
        self._std = state["feature_std"]
        self._width = len(spec["feature_names"])
        self._threshold = float(spec.get("threshold", 0.5))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Score the one input tensor (shape [N, n_features])."""
        if len(payload.inputs) != 1:
            raise InferenceError(f"expected 1 input tensor, got {len(payload.inputs)}")
        features = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        if features.ndim != 2 or features.shape[1] != self._width:
            raise InferenceError(f"expected shape [N, {self._width}], got {list(features.shape)}")
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(features))
            probability = torch.sigmoid(self._net((x - self._mean) / self._std).squeeze(-1)).numpy()
        label = (probability >= self._threshold).astype(np.int64)
        n = int(probability.shape[0])
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[
                ResponseOutput(name="probability", shape=[n], datatype="FP32", data=probability.tolist()),
                ResponseOutput(name="label", shape=[n], datatype="INT64", data=label.tolist()),
            ],
        )
