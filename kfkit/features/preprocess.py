"""The ONE function from stored feature values to model inputs: training and the transformer both call it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from kfkit.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np

__all__ = ["preprocess"]


def preprocess(raw: np.ndarray, feature_names: Sequence[str], transforms: Mapping[str, str]) -> np.ndarray:
    """Model inputs (float32, ``[rows, features]``) from raw feature values in ``feature_names`` order.

    Training calls it on the point-in-time frame, the transformer on the online rows; there is no second
    copy to drift. Each transformed column is computed on its own contiguous float32 copy, so a row gets the
    same bits whether it arrives alone or in a batch of thousands (NumPy's vector loops differ for strided
    input). NaN (a value never stored) stays NaN: the caller decides what a missing value means.

    Args:
        raw: Values, ``[rows, len(feature_names)]``.
        feature_names: Column names of ``raw``.
        transforms: Feature name -> ``identity`` or ``log1p`` (``features.transforms``); others pass through.

    Raises:
        ConfigError: a transform name is unknown.
    """
    import numpy as np

    out = np.array(raw, dtype=np.float32, ndmin=2)  # a copy: callers keep their frame
    for j, name in enumerate(feature_names):
        transform = transforms.get(name, "identity")
        if transform == "identity":
            continue
        if transform != "log1p":
            raise ConfigError(f"features.transforms.{name}={transform!r} is not one of identity, log1p")
        out[:, j] = np.log1p(np.ascontiguousarray(out[:, j]))
    return out
