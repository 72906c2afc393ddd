"""Request validation in one place: every protocol's bad input is a RequestError that names the problem."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from kfkit import errors
from kfkit.serving.validation import (
    RequestError,
    RequestValidator,
    check_body_size,
    parse_binary_header_length,
    parse_cloudevent,
    parse_content_length,
    parse_json,
)

N = 30
NAMES = [f"x{i:02d}" for i in range(N)]
ROWS = np.arange(2 * N, dtype=np.float32).reshape(2, N) / 7


@pytest.fixture(scope="module")
def validator() -> RequestValidator:
    return RequestValidator(NAMES)


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


def test_errors_are_kfkit_and_kserve_input_errors_with_a_status():
    import kserve.errors

    error = RequestError("bad", status_code=413)
    assert isinstance(error, errors.InvalidInput) and isinstance(error, kserve.errors.InvalidInput)
    assert (str(error), error.status_code, error.grpc_status) == ("bad", 413, "RESOURCE_EXHAUSTED")
    assert (RequestError("x").status_code, RequestError("x").grpc_status) == (400, "INVALID_ARGUMENT")


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
    with pytest.raises(RequestError, match=message):
        validator.v2_binary(body, length)


def test_binary_request_without_inputs_names_the_problem(validator):
    header = b'{"id": "x"}'
    with pytest.raises(RequestError, match=r'has no "inputs" \(keys: \[\'id\'\]\)'):
        validator.v2_binary(header + ROWS.tobytes(), str(len(header)))


def test_binary_size_must_match_shape_and_datatype(validator):
    raw = ROWS.astype("<f4").tobytes()
    header = {"name": "f", "shape": [2, N], "datatype": "FP64", "parameters": {"binary_data_size": len(raw)}}
    body = json.dumps({"inputs": [header]}).encode()
    with pytest.raises(RequestError, match=r"240 bytes of binary data, but shape \[2, 30\] of FP64 needs 480"):
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
    with pytest.raises(RequestError, match=message):
        validator.v2(body)


def _grpc(**kwargs) -> pb.ModelInferRequest:
    contents = kwargs.pop("contents", pb.InferTensorContents(fp32_contents=ROWS.ravel().tolist()))
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="features", datatype=kwargs.pop("datatype", "FP32"), shape=kwargs.pop("shape", [2, N]), contents=contents
    )
    return pb.ModelInferRequest(model_name="m", inputs=[tensor], **kwargs)


def test_grpc_contents_and_raw_bytes(validator):
    parsed = validator.grpc(_grpc(id="g1"))
    np.testing.assert_allclose(parsed.features, ROWS, rtol=1e-7)
    assert parsed.request_id == "g1" and not parsed.binary_outputs
    raw = validator.grpc(_grpc(contents=pb.InferTensorContents(), raw_input_contents=[ROWS.tobytes()]))
    np.testing.assert_array_equal(raw.features, ROWS)
    assert raw.binary_outputs == {"probability", "label"}  # raw in, raw out (as KServe does)
    ints = validator.grpc(_grpc(datatype="INT64", contents=pb.InferTensorContents(int64_contents=[1] * 2 * N)))
    assert ints.features.dtype == np.float32 and (ints.features == 1).all()


BAD_GRPC = {
    "wrong field": (
        {"contents": pb.InferTensorContents(int64_contents=[1] * 60)},
        r"datatype FP32, whose values go in contents.fp32_contents .* got contents.int64_contents",
    ),
    "no values": ({"contents": pb.InferTensorContents()}, r"got no values"),
    "both": ({"raw_input_contents": [ROWS.tobytes()]}, r"both contents.fp32_contents and raw_input_contents"),
    "raw truncated": (
        {"contents": pb.InferTensorContents(), "raw_input_contents": [ROWS.tobytes()[:-2]]},
        r"238 bytes of binary data, but shape \[2, 30\] of FP32 needs 240",
    ),
    "negative shape": ({"shape": [-1, N]}, r"shape \[-1, 30\] has a negative dimension"),
    "bytes": ({"datatype": "BYTES"}, r"datatype BYTES; send FP32"),
    "fp16 contents": ({"datatype": "FP16"}, r"FP16 values can only be sent as raw_input_contents"),
    "nan": (
        {"contents": pb.InferTensorContents(fp32_contents=[float("nan")] + [0.0] * 59)},
        r"1 NaN, infinite or beyond-float32 values \(row 0 feature 'x00'\)",
    ),
    "unknown output": (
        {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="p")]},
        r"unknown output\(s\) 'p'; this model returns 'probability', 'label'",
    ),
}


@pytest.mark.parametrize(("change", "message"), BAD_GRPC.values(), ids=BAD_GRPC.keys())
def test_grpc_errors_name_the_problem(validator, change, message):
    with pytest.raises(RequestError, match=message):
        validator.grpc(_grpc(**change))


def test_values_rounding_into_float32_range_pass_and_beyond_fail(validator):
    edge = float(np.finfo(np.float32).max)
    assert np.isfinite(validator.features([[edge * (1 + 1e-12)] + [0.0] * (N - 1)], where="x")).all()
    with pytest.raises(RequestError, match=r"2 NaN, infinite or beyond-float32 values \(row 0 feature 'x00', row 1"):
        validator.features([[1e39] + [0.0] * (N - 1), [-1e300] + [0.0] * (N - 1)], where="x")


def test_binary_cloudevent_needs_every_required_header_and_a_body():
    full = {
        "ce-specversion": "1.0",
        "ce-id": "e1",
        "ce-source": "s",
        "ce-type": "t",
        "content-type": "application/json",
    }
    event = parse_cloudevent(full, b'{"instances": []}')
    assert event.binary and event.attributes["id"] == "e1" and event.data == b'{"instances": []}'
    with pytest.raises(RequestError, match=r"missing or has empty 'ce-source', 'ce-type'"):
        parse_cloudevent({"ce-id": "e1", "ce-specversion": "1.0"}, b"{}")
    with pytest.raises(RequestError, match=r"CloudEvent 'e1' has an empty body"):
        parse_cloudevent(full, b"")
    with pytest.raises(RequestError, match=r"ce-specversion: '9' is not supported"):
        parse_cloudevent({**full, "ce-specversion": "9"}, b"{}")
    assert parse_cloudevent({"content-type": "application/json"}, b"{}") is None


def test_structured_cloudevent_envelope():
    envelope = {"specversion": "1.0", "id": "s1", "source": "s", "type": "t", "data": {"instances": [[1]]}}
    headers = {"content-type": "application/cloudevents+json; charset=utf-8"}
    event = parse_cloudevent(headers, json.dumps(envelope).encode())
    assert not event.binary and event.data == {"instances": [[1]]} and event.attributes["id"] == "s1"
    encoded = {**{k: v for k, v in envelope.items() if k != "data"}, "data_base64": base64.b64encode(b"[1]").decode()}
    assert parse_cloudevent(headers, json.dumps(encoded).encode()).data == [1]
    with pytest.raises(RequestError, match=r"missing or has non-string 'id'"):
        parse_cloudevent(headers, json.dumps({**envelope, "id": 5}).encode())
    with pytest.raises(RequestError, match=r"'s1' has no data"):
        parse_cloudevent(headers, json.dumps({k: v for k, v in envelope.items() if k != "data"}).encode())


def test_http_level_checks():
    assert parse_content_length(None) is None and parse_content_length("12") == 12
    with pytest.raises(RequestError, match=r"content-length: '1e3' is not a non-negative integer"):
        parse_content_length("1e3")
    check_body_size(10, 10)
    with pytest.raises(RequestError, match=r"11 bytes is over this server's limit of 10 bytes") as caught:
        check_body_size(11, 10)
    assert caught.value.status_code == 413
    assert parse_binary_header_length(" 12 ", 20) == 12
    with pytest.raises(RequestError, match=r"NaN and Infinity are not JSON"):
        parse_json(b'{"instances": [[NaN]]}')
    with pytest.raises(RequestError, match=r"request body is empty"):
        parse_json(b"  ")


# ---- fast decoders: they must agree with the plain path on every body, good or bad --------------------

BIG = np.round(np.random.default_rng(3).normal(0, 50, (64, N)), 4).astype(np.float32)  # a 64-row body: ~15 KB


def _text(body: dict) -> bytes:
    return json.dumps(body).encode()


def _big_v2(data) -> dict:
    return {"inputs": [{"name": "features", "shape": [64, N], "datatype": "FP32", "data": data}], "id": "b"}


FLAT = BIG.ravel().tolist()
FAST_PATH_BODIES = {
    "floats": _text(_big_v2(FLAT)),
    "ints and floats": _text(_big_v2([int(v) if i % 3 == 0 else v for i, v in enumerate(FLAT)])),
    "row-nested data": _text(_big_v2(BIG.tolist())),
    "ragged nesting, same count": _text(_big_v2([FLAT[:3], *FLAT[3:]])),
    "string among numbers": _text(_big_v2([*FLAT[:-1], "1.0"])),
    "null among numbers": _text(_big_v2([None, *FLAT[1:]])),
    "boolean among numbers": _text(_big_v2([True, *FLAT[1:]])),
    "beyond float32": _text(_big_v2([1e39, *FLAT[1:]])),
    "beyond float64": _text(_big_v2(FLAT)).replace(b'"data": [', b'"data": [1e400, '),
    "NaN literal": _text(_big_v2([float("nan"), *FLAT[1:]])),
    "too few values": _text(_big_v2(FLAT[:-1])),
    "outputs and parameters": _text(
        {**_big_v2(FLAT), "outputs": [{"name": "label"}], "parameters": {"binary_data_output": True}}
    ),
    "two inputs": _text({"inputs": [_big_v2(FLAT)["inputs"][0]] * 2}),
    "inputs not a list": _text({"inputs": {"data": FLAT}}),
    "top-level array": _text([FLAT]),
    "trailing comma": _text(_big_v2(FLAT))[:-2] + b",}",
    "repeated top-level name": _text(_big_v2(FLAT))[:-1] + b', "id": 7}',
    "repeated tensor name": _text(_big_v2(FLAT)).replace(b'"data": [', b'"data": "x", "data": [', 1),
    "repeated tensor name, last bad": _text(_big_v2(FLAT)).replace(b']}], "id"', b'], "data": "x"}], "id"', 1),
}


@pytest.mark.parametrize("body", FAST_PATH_BODIES.values(), ids=FAST_PATH_BODIES.keys())
def test_v2_fast_json_decoding_agrees_with_orjson(validator, body):
    """simdjson (bodies >= 1 KB) gives the same features, or the same error, as orjson + the list path."""
    from kfkit.serving.validation import parse_v2_json

    assert len(body) > 1024

    def outcome(decode):
        try:
            parsed = validator.v2(decode(body))
        except RequestError as e:
            return "error", str(e)
        return "ok", parsed.features.tobytes(), parsed.outputs, parsed.binary_outputs, parsed.request_id

    expected = outcome(parse_json)
    assert outcome(parse_v2_json) == expected
    if body == FAST_PATH_BODIES["floats"]:
        assert expected[0] == "ok" and np.array_equal(np.frombuffer(expected[1], np.float32).reshape(64, N), BIG)


def test_v2_fast_json_decoding_reads_flat_numbers_without_python_floats():
    from kfkit.serving.validation import parse_v2_json

    decoded = parse_v2_json(FAST_PATH_BODIES["floats"])
    assert isinstance(decoded["inputs"][0]["data"], np.ndarray)  # the fast path was taken
    assert decoded["id"] == "b" and decoded["inputs"][0]["shape"] == [64, N]
    nested = parse_v2_json(FAST_PATH_BODIES["row-nested data"])["inputs"][0]["data"]
    assert isinstance(nested, list)  # nested lists go the checked way


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_grpc_packed_floats_are_read_from_the_wire_exactly(validator, datatype):
    field = "fp32_contents" if datatype == "FP32" else "fp64_contents"
    contents = pb.InferTensorContents(**{field: BIG.ravel().tolist()})
    request = _grpc(datatype=datatype, shape=[64, N], contents=contents)
    # through the wire, as a client sends it
    parsed = validator.grpc(pb.ModelInferRequest.FromString(request.SerializeToString()))
    np.testing.assert_array_equal(parsed.features, BIG)
    assert parsed.features.flags.writeable and parsed.features.flags.c_contiguous


def test_grpc_contents_with_two_fields_is_refused_by_name(validator):
    contents = pb.InferTensorContents(fp32_contents=ROWS.ravel().tolist(), int64_contents=[1])
    with pytest.raises(RequestError, match=r"whose values go in contents.fp32_contents .* got contents.int64_contents"):
        validator.grpc(_grpc(contents=contents))


ROWS64 = BIG.tolist()
NAMED = [dict(zip(NAMES, row, strict=True)) for row in ROWS64]
V1_FAST_PATH_BODIES = {
    "rows": _text({"instances": ROWS64}),
    "ints and floats": _text({"instances": [[int(v) if j % 4 == 0 else v for j, v in enumerate(r)] for r in ROWS64]}),
    "named rows": _text({"instances": NAMED}),
    "named then list": _text({"instances": [NAMED[0], *ROWS64[1:]]}),
    "list then named": _text({"instances": [ROWS64[0], *NAMED[1:]]}),
    "ragged rows, same count": _text({"instances": [ROWS64[0][:-1], ROWS64[1] + [1.0], *ROWS64[2:]]}),
    "a nested row": _text({"instances": [[ROWS64[0][:15], *ROWS64[0][15:]], *ROWS64[1:]]}),
    "flat numbers": _text({"instances": FLAT}),
    "a number among rows": _text({"instances": [1.0, *ROWS64[1:]]}),
    "string among numbers": _text({"instances": [[*ROWS64[0][:-1], "1"], *ROWS64[1:]]}),
    "null among numbers": _text({"instances": [[None, *ROWS64[0][1:]], *ROWS64[1:]]}),
    "boolean among numbers": _text({"instances": [[False, *ROWS64[0][1:]], *ROWS64[1:]]}),
    "beyond float32": _text({"instances": [[1e39, *ROWS64[0][1:]], *ROWS64[1:]]}),
    "too narrow": _text({"instances": [r[:-1] for r in ROWS64]}),
    "empty rows": _text({"instances": [[] for _ in range(400)]}),
    "repeated name": _text({"instances": ROWS64})[:-1] + b', "instances": [[1.0]]}',
    "other keys": _text({"inputs": ROWS64}),
    "instances not a list": _text({"instances": {"rows": ROWS64}}),
}


@pytest.mark.parametrize("body", V1_FAST_PATH_BODIES.values(), ids=V1_FAST_PATH_BODIES.keys())
def test_v1_fast_json_decoding_agrees_with_orjson(validator, body):
    """simdjson (bodies >= 1 KB) gives the same features, or the same error, as orjson + the list path."""
    from kfkit.serving.validation import parse_v1_json

    assert len(body) > 1024

    def outcome(decode):
        try:
            return "ok", validator.v1(decode(body)).tobytes()
        except RequestError as e:
            return "error", str(e)

    expected = outcome(parse_json)
    assert outcome(parse_v1_json) == expected
    if body in (V1_FAST_PATH_BODIES["rows"], V1_FAST_PATH_BODIES["named rows"]):
        assert expected[0] == "ok" and np.array_equal(np.frombuffer(expected[1], np.float32).reshape(64, N), BIG)


def test_v1_fast_json_decoding_reads_rows_without_python_floats():
    from kfkit.serving.validation import parse_v1_json

    rows = parse_v1_json(V1_FAST_PATH_BODIES["rows"])["instances"]
    assert isinstance(rows, np.ndarray) and rows.shape == (64, N)  # the fast path was taken
    assert isinstance(parse_v1_json(V1_FAST_PATH_BODIES["ragged rows, same count"])["instances"], list)
