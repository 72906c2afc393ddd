"""The KServe predictor: scores a published kfkit model over KServe V1 and Open Inference Protocol (V2)."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kserve
import kserve.errors
import numpy as np
from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferRequest
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from kfkit import errors
from kfkit.serving.local import V2_INPUT_NAME

if TYPE_CHECKING:  # torch is heavy: it is imported by kfkit.model when the model loads
    import torch

    from kfkit.model import ModelSpec

__all__ = ["KfkitPredictor", "PredictorInputError", "V2_INPUT_NAME", "V2_OUTPUTS"]

V2_OUTPUTS = (("probability", "FP32"), ("label", "INT64"))
"""Names and datatypes of the V2 output tensors, each of shape [N]."""

# Datatypes whose values are numbers; everything is scored as float32 anyway.
_V2_NUMERIC = frozenset(
    {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_MAX_REPORTED = 3  # offending positions quoted in one message


class PredictorInputError(errors.InvalidInput, kserve.errors.InvalidInput):
    """A request the model cannot score.

    Both kfkit's and KServe's ``InvalidInput``: KServe's REST server answers it with 400 and a JSON
    ``error``, its gRPC server with INVALID_ARGUMENT, and kfkit code can catch it as a ``KfkitError``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.args = (reason,)  # kserve's __init__ does not pass the reason on to Exception


class KfkitPredictor(kserve.Model):
    """Serves one kfkit model version: raw float features in, positive-class probability and label out."""

    def __init__(self, name: str, model_dir: str | Path, *, num_threads: int | None = None) -> None:
        """Create the predictor; call :meth:`load` before serving.

        Args:
            name: Endpoint name (``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``).
            model_dir: A verified model folder (``model.json`` + ``model.safetensors``).
            num_threads: torch intra-op threads for this process; None leaves torch's default.
        """
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.num_threads = num_threads
        self.model: torch.nn.Module | None = None
        self.spec: ModelSpec | None = None
        self._feature_names: list[str] = []
        self._feature_set: frozenset[str] = frozenset()
        self._threshold = 0.5
        self._predict_proba: Callable[[torch.nn.Module, np.ndarray], np.ndarray] | None = None

    def load(self) -> bool:
        """Load the weights, fix the thread count, and score one row so the first request is not slow.

        Returns:
            True once the model is ready.

        Raises:
            kfkit.errors.ModelLoadError: the folder is not a loadable kfkit model.
        """
        from kfkit.model import load_model, predict_proba

        if self.num_threads:
            import torch

            torch.set_num_threads(self.num_threads)
        self.model, self.spec = load_model(self.model_dir)
        self._feature_names = list(self.spec.feature_names)
        self._feature_set = frozenset(self._feature_names)
        self._threshold = float(self.spec.threshold)
        self._predict_proba = predict_proba  # bound once: the scoring path imports nothing per request
        predict_proba(self.model, np.zeros((1, self.spec.input_dim), dtype=np.float32))
        self.ready = True
        return self.ready

    def get_input_types(self) -> list[dict]:
        """V2 model metadata for the one input tensor (any input name is accepted on requests)."""
        if self.spec is None:
            return []
        return [{"name": V2_INPUT_NAME, "datatype": "FP32", "shape": [-1, self.spec.input_dim]}]

    def get_output_types(self) -> list[dict]:
        """V2 model metadata for the output tensors."""
        return [{"name": name, "datatype": datatype, "shape": [-1]} for name, datatype in V2_OUTPUTS]

    def predict(
        self,
        payload: dict | InferRequest | ModelInferRequest,
        headers: dict[str, str] | None = None,  # noqa: ARG002 (KServe's hook signature)
    ) -> dict | InferResponse:
        """Score a V1 JSON body or a V2 inference request.

        Args:
            payload: ``{"instances": [[x0, x1, ...], ...]}`` or ``{"instances": [{"feature": x, ...}, ...]}``
                (V1), or an ``InferRequest`` with one numeric input of shape ``[N, n_features]`` (V2 REST
                and gRPC).
            headers: Request headers (unused).

        Returns:
            ``{"predictions": [{"probability": p, "label": 0 or 1}, ...]}`` for V1; for V2 an
            ``InferResponse`` with ``probability`` (FP32, [N]) and ``label`` (INT64, [N]).

        Raises:
            PredictorInputError: the request cannot be scored (KServe answers 400).
        """
        if isinstance(payload, ModelInferRequest):
            payload = InferRequest.from_grpc(payload)
        if isinstance(payload, InferRequest):
            return self._predict_v2(payload)
        if isinstance(payload, dict):
            return self._predict_v1(payload)
        raise PredictorInputError(
            f"request body is {_json_kind(payload)}, not a JSON object; "
            f'send {{"instances": [[{self._width_hint()}], ...]}} with Content-Type: application/json'
        )

    def _score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        probabilities = self._predict_proba(self.model, features)
        return probabilities, (probabilities >= self._threshold).astype(np.int64)

    def _predict_v1(self, payload: dict) -> dict:
        instances = payload.get("instances")
        if not isinstance(instances, list):
            raise PredictorInputError(
                f'expected {{"instances": [[{self._width_hint()}], ...]}} (a list of rows); '
                f"got keys {sorted(map(str, payload))}"
            )
        if instances and isinstance(instances[0], dict):
            instances = self._named_rows(instances)
        probabilities, labels = self._score(self._to_features(instances, where="instances"))
        return {
            "predictions": [
                {"probability": p, "label": y} for p, y in zip(probabilities.tolist(), labels.tolist(), strict=True)
            ]
        }

    def _named_rows(self, instances: list) -> list[list[Any]]:
        """Rows of ``{feature name: value}`` reordered into the model's feature order."""
        names, expected = self._feature_names, self._feature_set
        rows = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise PredictorInputError(
                    f"instances[{i}] is a {type(instance).__name__} but instances[0] is an object; "
                    "send every row as {feature name: value} or every row as a list"
                )
            if instance.keys() != expected:
                missing = [n for n in names if n not in instance]
                extra = sorted(str(k) for k in instance if k not in expected)
                problems = [
                    f"missing {_quote_list(missing)}" if missing else "",
                    f"unknown {_quote_list(extra)}" if extra else "",
                ]
                raise PredictorInputError(
                    f"instances[{i}]: {'; '.join(p for p in problems if p)}; "
                    f"the model takes exactly these {len(names)} features: {_quote_list(names)}"
                )
            rows.append([instance[n] for n in names])
        return rows

    def _predict_v2(self, request: InferRequest) -> InferResponse:
        if len(request.inputs) != 1:
            got = ", ".join(repr(t.name) for t in request.inputs) or "none"
            raise PredictorInputError(
                f"expected exactly 1 input tensor (e.g. {V2_INPUT_NAME!r}, shape [N, {self.spec.input_dim}]), "
                f"got {len(request.inputs)}: {got}"
            )
        tensor = request.inputs[0]
        where = f"input {tensor.name!r}"
        if tensor.datatype not in _V2_NUMERIC:
            raise PredictorInputError(
                f"{where} has datatype {tensor.datatype}; send FP32 (FP64 and integer types are accepted too)"
            )
        shape = list(tensor.shape)
        data = tensor.data
        if data is not None and len(data) > 0:
            values: Any = data if isinstance(data, list) else list(data)  # gRPC gives a protobuf container
        else:  # binary data (gRPC raw_input_contents): kserve decodes and reshapes it
            try:
                values = tensor.as_numpy()
            except (ValueError, TypeError) as e:
                raise PredictorInputError(f"{where} with shape {shape} cannot be decoded: {e}") from e
        probabilities, labels = self._score(self._to_features(values, where=where, shape=shape))
        outputs = []
        for (name, datatype), array in zip(V2_OUTPUTS, (probabilities, labels), strict=True):
            output = InferOutput(name=name, shape=list(array.shape), datatype=datatype)
            output.set_data_from_numpy(array, binary_data=request.use_binary_outputs)
            outputs.append(output)
        return InferResponse(
            response_id=request.id or uuid.uuid4().hex,
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    def _to_features(self, values: Any, *, where: str, shape: Sequence[int] | None = None) -> np.ndarray:
        """Validate a batch and return it as a C-contiguous float32 array of shape (N, n_features).

        Every plain input error is caught here, so none becomes a 500: ragged or non-numeric values,
        a V2 shape that does not match its data, an empty batch, the wrong width, NaN/inf.
        """
        n = self.spec.input_dim
        if isinstance(values, np.ndarray):
            array = values
        else:
            try:
                array = np.asarray(values)
            except ValueError as e:  # ragged nesting: name the first row that differs
                raise PredictorInputError(f"{where}{self._ragged(values)}; every row needs {self._width_hint()}") from e
        if array.dtype.kind not in "iuf":
            position, value = _first_non_number(values)
            shown = "null" if value is None else repr(value)
            raise PredictorInputError(
                f"{where}{self._describe(position, shape)} is {shown}, not a number; "
                "send every feature as a JSON number (no strings, null, booleans or nested lists)"
            )
        if shape is not None:
            if len(shape) != 2 or math.prod(shape) != array.size:
                raise PredictorInputError(
                    f"{where} has shape {list(shape)} and {array.size} values; "
                    f"send shape [N, {n}] with N*{n} values, row by row"
                )
            array = array.reshape(shape)
        if array.size == 0:
            raise PredictorInputError(f"{where} is empty; send at least one row of {n} numbers")
        if array.ndim != 2:
            hint = f"; wrap a single row in a list: [[{self._width_hint()}]]" if array.ndim == 1 else ""
            raise PredictorInputError(f"{where} must be a list of rows (2-D), got {array.ndim}-D{hint}")
        if array.shape[1] != n:
            raise PredictorInputError(f"{where}: each row needs {self._width_hint()}, got {array.shape[1]}")
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are reported just below
            features = np.ascontiguousarray(array, dtype=np.float32)
        if not features.flags.writeable:  # decoded from a read-only buffer; torch wants to own writable memory
            features = features.copy()
        bad = ~np.isfinite(features)
        if bad.any():
            spots = ", ".join(
                f"row {r} feature {self._feature_names[c]!r}" for r, c in np.argwhere(bad)[:_MAX_REPORTED].tolist()
            )
            raise PredictorInputError(
                f"{where} has {int(bad.sum())} NaN, infinite or beyond-float32 values ({spots}); "
                "send finite numbers (impute missing values before calling the model)"
            )
        return features

    def _describe(self, position: tuple[int, ...], shape: Sequence[int] | None) -> str:
        """``[r][c] (feature 'x')`` for a position in the request, naming the feature where known."""
        text = "".join(f"[{i}]" for i in position)
        n = self.spec.input_dim
        if len(position) == 1 and shape is not None and len(shape) == 2 and shape[1] == n:  # flat V2 data
            column = position[0] % n
        elif len(position) == 2:
            column = position[1]
        else:
            return text
        return f"{text} (feature {self._feature_names[column]!r})" if column < n else text

    def _ragged(self, values: Any) -> str:
        """Where a batch that numpy cannot make rectangular goes wrong (error path only)."""
        if isinstance(values, list) and all(isinstance(row, list) for row in values):
            for i, row in enumerate(values):
                if len(row) != self.spec.input_dim:
                    return f"[{i}] has {len(row)} values"
        return " mixes numbers and nested lists"

    def _width_hint(self) -> str:
        names = self._feature_names
        return f"{len(names)} numbers (" + ", ".join(names[:2]) + (", ...)" if len(names) > 2 else ")")


def _iter_leaves(values: Any, position: tuple[int, ...] = ()) -> Iterator[tuple[tuple[int, ...], Any]]:
    if isinstance(values, list | tuple):
        for i, item in enumerate(values):
            yield from _iter_leaves(item, (*position, i))
    else:
        yield position, values


def _first_non_number(values: Any) -> tuple[tuple[int, ...], Any]:
    """Position and value of the first leaf that is not an int or float (only called on the error path)."""
    if isinstance(values, np.ndarray):
        return (), f"an array of {values.dtype}"
    for position, value in _iter_leaves(values):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return position, value
        if isinstance(value, int) and not -(2**63) <= value < 2**64:
            return position, value
    return (), values


def _json_kind(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "raw bytes (not decoded as JSON)"
    kinds = {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
    }
    return kinds.get(type(value), f"a {type(value).__name__}")


def _quote_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
