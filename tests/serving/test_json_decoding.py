"""JSON bodies: the simdjson fast path must agree with orjson (and the checks after it) on every body, good or bad."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kfkit.errors import InvalidInput
from kfkit.serving.json_decoding import parse_json

N = 30
NAMES = [f"x{i:02d}" for i in range(N)]

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
    from kfkit.serving.json_decoding import parse_v2_json

    assert len(body) > 1024

    def outcome(decode):
        try:
            parsed = validator.v2(decode(body))
        except InvalidInput as e:
            return "error", str(e)
        return "ok", parsed.features.tobytes(), parsed.outputs, parsed.binary_outputs, parsed.request_id

    expected = outcome(parse_json)
    assert outcome(parse_v2_json) == expected
    if body == FAST_PATH_BODIES["floats"]:
        assert expected[0] == "ok" and np.array_equal(np.frombuffer(expected[1], np.float32).reshape(64, N), BIG)


def test_v2_fast_json_decoding_reads_flat_numbers_without_python_floats():
    from kfkit.serving.json_decoding import parse_v2_json

    decoded = parse_v2_json(FAST_PATH_BODIES["floats"])
    assert isinstance(decoded["inputs"][0]["data"], np.ndarray)  # the fast path was taken
    assert decoded["id"] == "b" and decoded["inputs"][0]["shape"] == [64, N]
    nested = parse_v2_json(FAST_PATH_BODIES["row-nested data"])["inputs"][0]["data"]
    assert isinstance(nested, list)  # nested lists go the checked way


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
    from kfkit.serving.json_decoding import parse_v1_json

    assert len(body) > 1024

    def outcome(decode):
        try:
            return "ok", validator.v1(decode(body)).tobytes()
        except InvalidInput as e:
            return "error", str(e)

    expected = outcome(parse_json)
    assert outcome(parse_v1_json) == expected
    if body in (V1_FAST_PATH_BODIES["rows"], V1_FAST_PATH_BODIES["named rows"]):
        assert expected[0] == "ok" and np.array_equal(np.frombuffer(expected[1], np.float32).reshape(64, N), BIG)


def test_v1_fast_json_decoding_reads_rows_without_python_floats():
    from kfkit.serving.json_decoding import parse_v1_json

    rows = parse_v1_json(V1_FAST_PATH_BODIES["rows"])["instances"]
    assert isinstance(rows, np.ndarray) and rows.shape == (64, N)  # the fast path was taken
    assert isinstance(parse_v1_json(V1_FAST_PATH_BODIES["ragged rows, same count"])["instances"], list)
