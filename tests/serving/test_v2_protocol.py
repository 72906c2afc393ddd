"""V2 REST requests (JSON and the binary tensor extension): the schema, its errors, and KServe's model_name field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfkit.errors import InvalidInput

N = 30
NAMES = [f"x{i:02d}" for i in range(N)]
ROWS = np.arange(2 * N, dtype=np.float32).reshape(2, N) / 7


def _v2(**tensor) -> dict:
    base = {"name": "features", "shape": [2, N], "datatype": "FP32", "data": ROWS.ravel().tolist()}
    return {"inputs": [{**base, **tensor}]}


def _binary(rows: np.ndarray, **extra) -> tuple[bytes, str]:
    raw = rows.astype("<f4").tobytes()
    tensor = {
        "name": "features",
        "shape": list(rows.shape),
        "datatype": "FP32",
        "parameters": {"binary_data_size": len(raw)},
    }
    header = json.dumps({"inputs": [tensor], **extra}).encode()
    return header + raw, str(len(header))


def test_v2_json_gives_float32_rows_and_the_requested_outputs(validator):
    body = {**_v2(), "id": "r1", "outputs": [{"name": "label", "parameters": {"binary_data": True}}]}
    parsed = validator.v2(body)
    assert (
        parsed.features.dtype == np.float32 and parsed.features.flags.c_contiguous and parsed.features.flags.writeable
    )
    np.testing.assert_array_equal(parsed.features, ROWS)
    assert (parsed.request_id, parsed.outputs, parsed.binary_outputs) == ("r1", ("label",), frozenset({"label"}))
    everything = validator.v2({**_v2(), "parameters": {"binary_data_output": True}})
    assert everything.outputs == ("probability", "label") and everything.binary_outputs == {"probability", "label"}


def test_v2_binary_extension_round_trips(validator):
    body, length = _binary(ROWS)
    parsed = validator.v2_binary(body, length)
    np.testing.assert_array_equal(parsed.features, ROWS)
    assert parsed.features.flags.writeable  # copied out of the read-only request buffer


BAD_BINARY = {
    "truncated": (lambda b, n: (b[:-1], n), r"binary_data_size is 240 but 239 bytes follow the JSON part"),
    "padded": (lambda b, n: (b + b"\0", n), r"parameters.binary_data_size is 240 but 241 bytes follow"),
    "header abc": (lambda b, n: (b, "abc"), r"inference-header-content-length: 'abc' is not a byte count"),
    "header zero": (lambda b, n: (b, "0"), r"does not fit a body of"),
    "header too long": (lambda b, n: (b, str(len(b) + 1)), r"does not fit a body of"),
    "header cuts json": (lambda b, n: (b, "5"), r"JSON part of the binary request \(first 5 bytes\) is not valid JSON"),
}


@pytest.mark.parametrize(("mutate", "message"), BAD_BINARY.values(), ids=BAD_BINARY.keys())
def test_bad_binary_requests(validator, mutate, message):
    body, length = mutate(*_binary(ROWS))
    with pytest.raises(InvalidInput, match=message):
        validator.v2_binary(body, length)


def test_binary_request_without_inputs_names_the_problem(validator):
    header = b'{"id": "x"}'
    with pytest.raises(InvalidInput, match=r'has no "inputs" \(keys: \[\'id\'\]\)'):
        validator.v2_binary(header + ROWS.tobytes(), str(len(header)))


def test_binary_size_must_match_shape_and_datatype(validator):
    raw = ROWS.astype("<f4").tobytes()
    header = {"name": "f", "shape": [2, N], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}
    body = json.dumps({"inputs": [header]}).encode()
    with pytest.raises(InvalidInput, match=r"240 bytes of binary data, but shape \[2, 30\] of FP64 needs 480"):
        validator.v2_binary(body + raw, str(len(body)))


BAD_V2 = {
    "not object": ([1], r"V2 request body is an array, not a JSON object"),
    "unknown field": ({**_v2(), "input": 1}, r"unknown field\(s\) 'input' in the V2 request"),
    "inputs missing": ({"id": "a"}, r'"inputs" must be a list of tensors, got nothing'),
    "id not string": ({**_v2(), "id": 3}, r'"id" must be a string, got a number'),
    "shape strings": (_v2(shape=["2", "30"]), r'"shape" must be a list of non-negative integers'),
    "negative shape": (_v2(shape=[-2, -30]), r"non-negative"),
    "data missing": ({"inputs": [{"name": "f", "shape": [1, N], "datatype": "FP32"}]}, r'has no "data"'),
    "data string": (_v2(data="1,2"), r'"data" must be a list of numbers, got a string'),
    "datatype list": (_v2(datatype=["FP32"]), r"datatype an array; send FP32"),
    "tensor unknown field": (_v2(dims=[1]), r"unknown field\(s\) 'dims'"),
    "parameters list": (_v2(parameters=[1]), r'"parameters" must be a JSON object, got an array'),
    "binary size without binary": (_v2(data=None, parameters={"binary_data_size": 8}), r"has no binary part"),
    "unknown output": ({**_v2(), "outputs": [{"name": "score"}]}, r"unknown output\(s\) 'score'"),
    "duplicate output": ({**_v2(), "outputs": [{"name": "label"}] * 2}, r"name an output twice"),
    "binary flag not bool": ({**_v2(), "parameters": {"binary_data_output": "yes"}}, r"must be true or false"),
}


@pytest.mark.parametrize(("body", "message"), BAD_V2.values(), ids=BAD_V2.keys())
def test_v2_schema_errors_name_the_field(validator, body, message):
    with pytest.raises(InvalidInput, match=message):
        validator.v2(body)


def test_model_name_and_version_in_the_body_are_accepted_when_they_are_the_urls(validator):
    """KServe's InferenceRESTClient writes model_name (and InferRequest can carry model_version) in the body."""
    parsed = validator.v2({**_v2(), "model_name": "test-mlp", "model_version": "1"})
    np.testing.assert_array_equal(parsed.features, ROWS)
    body, length = _binary(ROWS, model_name="test-mlp")
    np.testing.assert_array_equal(validator.v2_binary(body, length).features, ROWS)


MISMATCHED = {
    "other name": (
        {"model_name": "fraud"},
        r"\"model_name\" 'fraud' in the request body does not match the model 'test-mlp' of the URL",
    ),
    "other version": (
        {"model_name": "test-mlp", "model_version": "2"},
        r"\"model_version\" '2' in the request body does not match version '1' of model 'test-mlp'",
    ),
    "name not a string": ({"model_name": 3}, r'"model_name" must be a string, got a number'),
}


@pytest.mark.parametrize(("fields", "message"), MISMATCHED.values(), ids=MISMATCHED.keys())
def test_model_name_or_version_that_is_not_the_urls_is_400_naming_both(validator, fields, message):
    with pytest.raises(InvalidInput, match=message) as caught:
        validator.v2({**_v2(), **fields})
    assert caught.value.status_code == 400


def test_a_version_in_the_body_of_an_unversioned_model_is_refused():
    from kfkit.serving.tensors import TensorChecks
    from kfkit.serving.v2_protocol import V2Decoder

    decoder = V2Decoder(TensorChecks(NAMES), model_name="m", model_version=None)
    assert decoder.decode({**_v2(), "model_name": "m"}).features.shape == (2, N)
    with pytest.raises(InvalidInput, match=r"\"model_version\" '1' in the request body, but model 'm' of the URL"):
        decoder.decode({**_v2(), "model_version": "1"})
