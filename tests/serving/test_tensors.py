"""The checks every front ends in: float32 range, and errors that carry their HTTP status and gRPC code."""

from __future__ import annotations

import numpy as np
import pytest

from kfkit import errors
from kfkit.errors import InvalidInput
from kfkit.serving.http_framing import check_body_size

N = 30


def test_request_errors_are_kfkit_input_errors_with_a_status_and_grpc_code(validator):
    with pytest.raises(errors.InvalidInput) as caught:
        check_body_size(11, 10)
    error = caught.value
    assert (error.status_code, error.grpc_code, error.exit_code) == (413, "RESOURCE_EXHAUSTED", 2)
    with pytest.raises(errors.InvalidInput) as caught:
        validator.v2({"inputs": []})
    assert (caught.value.status_code, caught.value.grpc_code) == (400, "INVALID_ARGUMENT")


def test_values_rounding_into_float32_range_pass_and_beyond_fail(validator):
    edge = float(np.finfo(np.float32).max)
    assert np.isfinite(validator.features([[edge * (1 + 1e-12)] + [0.0] * (N - 1)], where="x")).all()
    with pytest.raises(InvalidInput, match=r"2 NaN, infinite or beyond-float32 values \(row 0 feature 'x00', row 1"):
        validator.features([[1e39] + [0.0] * (N - 1), [-1e300] + [0.0] * (N - 1)], where="x")
