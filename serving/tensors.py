"""The checks every front's request ends in: one finite float32 batch of the model's width, and how to answer.

Each protocol decoder (V1, V2 REST, V2 gRPC, TF Serving) turns its wire format into values and a shape,
then hands them to :meth:`TensorChecks.features`: nothing reaches the model unless it is a C-contiguous,
writable float32 array of shape (N, n_features), all finite. Every check raises
:class:`~kfkit.errors.InvalidInput` naming the first offending row and feature and the fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kfkit.errors import InvalidInput
from kfkit.model.names import INPUT_NAME, OUTPUT_NAMES
from kfkit.serving.messages import MAX_REPORTED, json_kind, quote_list

__all__ = ["ParsedRequest", "TensorChecks", "NUMERIC_DATATYPES"]

NUMERIC_DATATYPES = {
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
}
"""Open Inference Protocol numeric datatypes and their raw (little-endian) layout; all are scored as float32."""
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(slots=True)
class ParsedRequest:
    """A validated inference request: the batch to score and how to answer."""

    features: np.ndarray
    """C-contiguous, writable float32 array of shape (N, n_features), all finite."""
    request_id: str | None = None
    """The client's request id, echoed in the response."""
    outputs: tuple[str, ...] = OUTPUT_NAMES
    """Output tensors to return, in order."""
    binary_outputs: frozenset[str] = frozenset()
    """Outputs to return as raw bytes (V2 binary extension; gRPC raw_output_contents)."""


class TensorChecks:
    """The checks of one model's input tensor, shared by every protocol decoder."""

    def __init__(self, feature_names: Sequence[str]) -> None:
        """Bind the checks to the model's input columns (in the model's order)."""
        self.feature_names = list(feature_names)
        self.n_features = len(self.feature_names)
        names = self.feature_names
        self.width_hint = f"{len(names)} numbers (" + ", ".join(names[:2]) + (", ...)" if len(names) > 2 else ")")
        """``30 numbers (x00, x01, ...)``: what one row is, for messages."""

    def features(self, values: Any, *, where: str, shape: Sequence[int] | None = None) -> np.ndarray:
        """Validate a batch and return it as a C-contiguous, writable float32 array of shape (N, n_features).

        Every plain input error is caught here: ragged or non-numeric values, a shape that does not match
        its data, an empty batch, the wrong width, NaN/inf or values beyond float32.

        Args:
            values: Rows (nested lists or a 2-D array), or flat values with ``shape``.
            where: What the values are, for messages (``instances``, ``input 'features'``).
            shape: The declared shape of flat values (V2, gRPC, TF Serving).

        Raises:
            InvalidInput: naming the first offending row/feature and the fix.
        """
        n = self.n_features
        if isinstance(values, np.ndarray):
            array = values
        else:
            try:
                array = np.asarray(values)
            except ValueError as e:  # ragged nesting: name the first row that differs
                raise InvalidInput(f"{where}{self._ragged(values)}; every row needs {self.width_hint}") from e
        if array.dtype.kind not in "iuf":
            position, value = _first_non_number(values)
            shown = "null" if value is None else repr(value)
            raise InvalidInput(
                f"{where}{self._describe(position, shape)} is {shown:.80}, not a number; "
                "send every feature as a JSON number (no strings, null, booleans or nested lists)"
            )
        if shape is not None:
            if len(shape) != 2 or math.prod(shape) != array.size:
                raise InvalidInput(
                    f"{where} has shape {list(shape)} and {array.size} values; "
                    f"send shape [N, {n}] with N*{n} values, row by row"
                )
            array = array.reshape(shape)
        if array.size == 0:
            raise InvalidInput(f"{where} is empty; send at least one row of {n} numbers")
        if array.ndim != 2:
            hint = f"; wrap a single row in a list: [[{self.width_hint}]]" if array.ndim == 1 else ""
            raise InvalidInput(f"{where} must be a list of rows (2-D), got {array.ndim}-D{hint}")
        if array.shape[1] != n:
            raise InvalidInput(f"{where}: each row needs {self.width_hint}, got {array.shape[1]}")
        # Two reductions decide the common case: NaN fails both comparisons, and a float whose magnitude is
        # within float32's range casts without overflow. Integers always fit. The cast copies, so the batch
        # is C-contiguous and writable (torch wants to own writable memory) even from a read-only buffer.
        # float() first: comparing numpy scalars costs more than the two reductions themselves.
        if array.dtype.kind == "f" and not (
            float(np.minimum.reduce(array, axis=None)) >= -_FLOAT32_MAX
            and float(np.maximum.reduce(array, axis=None)) <= _FLOAT32_MAX
        ):
            self._report_non_finite(array, where)
        return array.astype(np.float32, order="C")

    def datatype(self, datatype: Any, where: str) -> str:
        """``datatype`` if it is a numeric Open Inference Protocol datatype.

        Raises:
            InvalidInput: any other datatype (BYTES, BOOL, a misspelling, not a string).
        """
        if not isinstance(datatype, str) or datatype not in NUMERIC_DATATYPES:
            shown = datatype if isinstance(datatype, str) else json_kind(datatype)
            raise InvalidInput(f"{where} has datatype {shown:.40}; send FP32 (FP64 and integer types are accepted too)")
        return datatype

    def decode_binary(self, raw: bytes | memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
        """Raw little-endian tensor bytes (V2 binary extension, gRPC raw contents) as an array of ``shape``.

        Raises:
            InvalidInput: the byte count does not match the shape and datatype.
        """
        dtype = NUMERIC_DATATYPES[datatype]
        count = math.prod(shape)
        if len(raw) != count * dtype.itemsize:
            raise InvalidInput(
                f"{where} has {len(raw)} bytes of binary data, but shape {shape} of {datatype} needs "
                f"{count * dtype.itemsize} ({dtype.itemsize} per value); the data is truncated or the shape is wrong"
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def one_input(self, names: list[Any]) -> None:
        """Refuse a request with other than exactly one input tensor.

        Raises:
            InvalidInput: naming the inputs sent.
        """
        if len(names) != 1:
            got = ", ".join(f"{n!r:.40}" for n in names[:MAX_REPORTED]) or "none"
            raise InvalidInput(
                f"expected exactly 1 input tensor (e.g. {INPUT_NAME!r}, shape [N, {self.n_features}]), "
                f"got {len(names)}: {got}"
            )

    @staticmethod
    def output_names(names: Sequence[str]) -> None:
        """Refuse requested outputs the model does not have, or one named twice.

        Raises:
            InvalidInput: naming the unknown outputs and the model's own.
        """
        unknown = [n for n in names if n not in OUTPUT_NAMES]
        if unknown:
            raise InvalidInput(
                f"unknown output(s) {quote_list(unknown)}; this model returns {quote_list(list(OUTPUT_NAMES))}"
            )
        if len(set(names)) != len(names):
            raise InvalidInput(f"outputs {list(names)} name an output twice")

    def _report_non_finite(self, array: np.ndarray, where: str) -> None:
        """Name NaN, infinite and beyond-float32 values (error path; values that round into range pass)."""
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(array.astype(np.float32))
        if not bad.any():
            return
        spots = ", ".join(
            f"row {r} feature {self.feature_names[c]!r}" for r, c in np.argwhere(bad)[:MAX_REPORTED].tolist()
        )
        raise InvalidInput(
            f"{where} has {int(bad.sum())} NaN, infinite or beyond-float32 values ({spots}); "
            "send finite numbers (impute missing values before calling the model)"
        )

    def _describe(self, position: tuple[int, ...], shape: Sequence[int] | None) -> str:
        """``[r][c] (feature 'x')`` for a position in the request, naming the feature where known."""
        text = "".join(f"[{i}]" for i in position)
        n = self.n_features
        if len(position) == 1 and shape is not None and len(shape) == 2 and shape[1] == n:  # flat V2 data
            column = position[0] % n
        elif len(position) == 2:
            column = position[1]
        else:
            return text
        return f"{text} (feature {self.feature_names[column]!r})" if column < n else text

    def _ragged(self, values: Any) -> str:
        """Where a batch that numpy cannot make rectangular goes wrong (error path only)."""
        if isinstance(values, list) and all(isinstance(row, list) for row in values):
            for i, row in enumerate(values):
                if len(row) != self.n_features:
                    return f"[{i}] has {len(row)} values"
        return " mixes numbers and nested lists"


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
