"""The one preprocessing function of training and serving."""

from __future__ import annotations

import numpy as np
import pytest

from kfkit.errors import ConfigError
from kfkit.features.preprocess import preprocess

NAMES = ["amount", "hour", "v01"]


def _raw(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return np.column_stack([np.exp(rng.normal(3.5, 1.0, n)), rng.integers(0, 24, n), rng.standard_normal(n)]).astype(
        np.float32
    )


def test_transforms_named_columns_only_and_returns_float32():
    raw = _raw(50)
    out = preprocess(raw, NAMES, {"amount": "log1p"})
    assert out.dtype == np.float32 and out.shape == raw.shape
    np.testing.assert_array_equal(out[:, 1:], raw[:, 1:])
    np.testing.assert_allclose(out[:, 0], np.log1p(raw[:, 0].astype(np.float64)), rtol=1e-6)
    assert not np.shares_memory(out, raw)
    np.testing.assert_array_equal(preprocess(raw, NAMES, {}), raw)


def test_a_row_alone_gets_the_same_bits_as_in_a_batch():
    # The online path preprocesses one row, training thousands: any difference would be skew.
    raw = _raw(4099)
    batch = preprocess(raw, NAMES, {"amount": "log1p", "hour": "log1p"})
    for i in (0, 1, 7, 8, 15, 16, 4098):
        np.testing.assert_array_equal(preprocess(raw[i], NAMES, {"amount": "log1p", "hour": "log1p"})[0], batch[i])
    for n in (3, 17, 64):
        np.testing.assert_array_equal(preprocess(raw[:n], NAMES, {"amount": "log1p", "hour": "log1p"}), batch[:n])


def test_nan_stays_nan_and_an_unknown_transform_is_refused():
    raw = _raw(3)
    raw[1, 0] = np.nan
    assert np.isnan(preprocess(raw, NAMES, {"amount": "log1p"})[1, 0])
    with pytest.raises(ConfigError, match=r"features.transforms.hour='sqrt'"):
        preprocess(raw, NAMES, {"hour": "sqrt"})
