"""Logged inference bodies to arrays: V1 and V2 requests to feature rows, responses to probabilities.

The bodies are the ones kfkit's predictor (and KServe's) logs: V1 ``{"instances": [[...], ...]}`` or rows
of ``{feature: value}``; V2 ``{"inputs": [{"name", "shape", "datatype", "data"}]}`` (one ``[rows, n]``
tensor, or one ``[rows]`` tensor per feature); responses V1 ``{"predictions": [{"probability": p, ...}]}``
(or bare numbers) and V2 ``{"outputs": [{"name": "probability", "data": [...]}, ...]}``. Anything else is
an :class:`~kfkit.errors.InvalidInput` whose message says what was wrong, never an unexpected exception.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.model.names import PROBABILITY
from kfkit.serving.messages import json_kind, quote_list

__all__ = ["loads", "request_rows", "response_probabilities"]

_NUMERIC_V2 = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32",
                         "UINT64", "BOOL"})  # fmt: skip


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(data: bytes, what: str) -> Any:
    """Decode JSON bytes, or a 400 saying where they break (NaN, Infinity and runaway nesting included)."""
    try:
        return json.loads(data, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if isinstance(e, RecursionError):
            raise InvalidInput(f"{what} nests too deeply to be an inference request") from None
        raise InvalidInput(f"{what} is not valid JSON ({e})") from None


def request_rows(payload: Any, feature_names: list[str]) -> np.ndarray:
    """The feature rows of a logged V1 or V2 request, float32 ``[rows, n_features]``, all finite.

    Raises:
        InvalidInput: not a V1 or V2 request of this model's width, or a value is not a finite number.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"request body is {json_kind(payload)}, not a V1 or V2 JSON object")
    if "inputs" in payload:
        rows = _v2_rows(payload["inputs"], feature_names)
    elif "instances" in payload:
        rows = _v1_rows(payload["instances"], feature_names)
    else:
        raise InvalidInput(
            f'request body has keys {quote_list(sorted(map(str, payload)))}; expected V1 "instances" or V2 "inputs"'
        )
    return _finite(rows, "request")


def response_probabilities(payload: Any) -> np.ndarray:
    """The positive-class probabilities of a logged V1 or V2 response, float32 ``[rows]``, each in [0, 1].

    Raises:
        InvalidInput: not a V1 or V2 response, or a probability that is not a number in [0, 1].
    """
    if not isinstance(payload, dict):
        raise InvalidInput(f"response body is {json_kind(payload)}, not a V1 or V2 JSON object")
    if "outputs" in payload:
        values = _v2_probabilities(payload["outputs"])
    elif "predictions" in payload:
        values = _v1_probabilities(payload["predictions"])
    else:
        raise InvalidInput(
            f'response body has keys {quote_list(sorted(map(str, payload)))}; expected V1 "predictions" or V2 "outputs"'
        )
    probabilities = _finite(_array(values, "response probabilities").reshape(-1), "response")
    if probabilities.size == 0:
        raise InvalidInput("response holds no predictions")
    if probabilities.min() < 0 or probabilities.max() > 1:
        raise InvalidInput("response probabilities must lie in [0, 1]; is the logged output a logit?")
    return probabilities


def _v2_rows(inputs: Any, names: list[str]) -> np.ndarray:
    width = len(names)
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput(f'V2 "inputs" must be a non-empty list of tensors, got {json_kind(inputs)}')
    tensors = [_tensor(t, i) for i, t in enumerate(inputs)]
    if len(tensors) == 1:
        name, shape, data = tensors[0]
        array = _shaped(data, shape, f"input {name!r}")
        if array.ndim == 1 and array.size == width:
            array = array.reshape(1, width)
        if array.ndim != 2 or array.shape[1] != width:
            raise InvalidInput(
                f"input {name!r} has shape {list(array.shape)}; the model takes [rows, {width}] (one row per request "
                "row, its features in the order of model.json)"
            )
        return array
    by_name = {name: (shape, data) for name, shape, data in tensors}
    if missing := [n for n in names if n not in by_name]:
        raise InvalidInput(
            f"V2 request has {len(tensors)} inputs but no tensor for feature(s) {quote_list(missing)}; send one "
            f"[rows, {width}] tensor, or one [rows] tensor per feature"
        )
    columns = [_shaped(by_name[n][1], by_name[n][0], f"input {n!r}").reshape(-1) for n in names]
    if len({c.size for c in columns}) != 1:
        raise InvalidInput("V2 per-feature inputs have different row counts")
    return np.stack(columns, axis=1)


def _tensor(tensor: Any, index: int) -> tuple[str, list[int], Any]:
    if not isinstance(tensor, dict):
        raise InvalidInput(f"inputs[{index}] is {json_kind(tensor)}, not a tensor object")
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str):
        raise InvalidInput(f'inputs[{index}] needs a "name" string, got {json_kind(name)}')
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise InvalidInput(f'input {name!r}: "shape" must be a list of non-negative integers, got {shape!r:.80}')
    if datatype is not None and datatype not in _NUMERIC_V2:
        raise InvalidInput(f"input {name!r} has datatype {datatype!r:.40}; the detector reads numeric tensors only")
    if "data" not in tensor:
        raise InvalidInput(f'input {name!r} has no "data" (binary tensor data is not logged; log JSON)')
    return name, shape, tensor["data"]


def _shaped(data: Any, shape: list[int], where: str) -> np.ndarray:
    array = _array(data, where)
    size = 1
    for d in shape:
        size *= d
    if array.size != size:
        raise InvalidInput(f"{where}: shape {shape} needs {size} values, data has {array.size}")
    return array.reshape(shape) if shape else array.reshape(-1)


def _v1_rows(instances: Any, names: list[str]) -> np.ndarray:
    if not isinstance(instances, list) or not instances:
        raise InvalidInput(f'V1 "instances" must be a non-empty list of rows, got {json_kind(instances)}')
    if isinstance(instances[0], dict):
        rows = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InvalidInput(f"instances[{i}] is {json_kind(instance)} but instances[0] is an object")
            try:
                rows.append([instance[n] for n in names])
            except KeyError:
                missing = [n for n in names if n not in instance]
                raise InvalidInput(f"instances[{i}] is missing feature(s) {quote_list(missing)}") from None
        instances = rows
    array = _array(instances, "instances")
    if array.ndim == 1 and array.size == len(names):
        array = array.reshape(1, -1)
    if array.ndim != 2 or array.shape[1] != len(names):
        raise InvalidInput(f"instances have shape {list(array.shape)}; the model takes rows of {len(names)} features")
    return array


def _v2_probabilities(outputs: Any) -> Any:
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        raise InvalidInput(f'V2 "outputs" must be a non-empty list of tensor objects, got {json_kind(outputs)}')
    chosen = next((o for o in outputs if o.get("name") == PROBABILITY), outputs[0] if len(outputs) == 1 else None)
    if chosen is None:
        names = [o.get("name") for o in outputs]
        raise InvalidInput(f"V2 response has outputs {quote_list(names)} but none named {PROBABILITY!r}")
    if "data" not in chosen:
        raise InvalidInput(f"output {chosen.get('name')!r} has no data (log responses as JSON, not binary)")
    return chosen["data"]


def _v1_probabilities(predictions: Any) -> Any:
    if not isinstance(predictions, list) or not predictions:
        raise InvalidInput(f'V1 "predictions" must be a non-empty list, got {json_kind(predictions)}')
    if isinstance(predictions[0], dict):
        try:
            return [p[PROBABILITY] for p in predictions]
        except (KeyError, TypeError):
            raise InvalidInput(f'every V1 prediction object needs a "{PROBABILITY}"') from None
    return predictions


def _array(values: Any, where: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: refused below
            array = np.asarray(values, dtype=np.float32)
    except (ValueError, TypeError, OverflowError):
        raise InvalidInput(f"{where}: every value must be a number (rows of equal length)") from None
    return array


def _finite(array: np.ndarray, where: str) -> np.ndarray:
    if array.size and not np.isfinite(array).all():
        bad = np.flatnonzero(~np.isfinite(array.reshape(array.shape[0], -1)).all(axis=1))
        raise InvalidInput(
            f"{where} row(s) {bad[:3].tolist()} hold null, NaN, an infinity or a number out of float32 range"
        )
    if array.shape[0] == 0:
        raise InvalidInput(f"{where} holds no rows")
    return array
