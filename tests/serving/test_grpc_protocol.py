"""V2 gRPC requests: values in typed contents or raw bytes, read exactly; every bad message named."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from kfkit.errors import InvalidInput

N = 30
NAMES = [f"x{i:02d}" for i in range(N)]
ROWS = np.arange(2 * N, dtype=np.float32).reshape(2, N) / 7
BIG = np.round(np.random.default_rng(3).normal(0, 50, (64, N)), 4).astype(np.float32)


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
    with pytest.raises(InvalidInput, match=message):
        validator.grpc(_grpc(**change))


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
    with pytest.raises(InvalidInput, match=r"whose values go in contents.fp32_contents .* got contents.int64_contents"):
        validator.grpc(_grpc(contents=contents))
