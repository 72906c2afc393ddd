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


# ------------------------------------------------------------------- the sync stack's way into the batcher


def _slow_sum(delay_s: float, passes: list[int], threads: set[str] | None = None):
    def score(features: np.ndarray) -> np.ndarray:
        import threading
        import time

        passes.append(len(features))
        if threads is not None:
            threads.add(threading.current_thread().name)
        time.sleep(delay_s)  # releases the GIL, as torch does: the other callers queue meanwhile
        if (features == -1).any():
            raise ValueError("poisoned row")
        return features.sum(axis=1).astype(np.float32)

    return score


def _from_threads(batcher, batches: list[np.ndarray]) -> list:
    from concurrent.futures import ThreadPoolExecutor

    def call(rows):
        try:
            return batcher.submit_blocking(rows)
        except Exception as e:  # the test looks at what each caller got
            return e

    with ThreadPoolExecutor(len(batches)) as pool:
        return list(pool.map(call, batches))


def test_callers_on_threads_share_passes_and_get_their_own_rows():
    from kfkit.serving.batching import AdaptiveBatcher

    passes: list[int] = []
    threads: set[str] = set()
    seen: list[tuple[int, int]] = []
    batcher = AdaptiveBatcher(_slow_sum(0.005, passes, threads), max_batch_size=16, max_batch_latency_ms=2,
                              on_batch=lambda rows, requests, _s: seen.append((rows, requests)))  # fmt: skip
    sizes = [1, 3, 1, 2, 5, 1, 1, 4] * 4
    batches = [np.full((n, N), float(i), dtype=np.float32) for i, n in enumerate(sizes)]
    results = _from_threads(batcher, batches)
    for rows, result in zip(batches, results, strict=True):
        np.testing.assert_array_equal(result, rows.sum(axis=1))
    assert sum(passes) == sum(sizes) and max(passes) <= 16
    assert len(passes) < len(sizes) / 2, passes  # merged across callers
    assert max(requests for _, requests in seen) > 1 and sum(r for _, r in seen) == len(sizes)
    assert "kfkit-infer" not in threads  # passes run on the callers' own threads, no hand-off
    batcher.close()


def test_a_lone_caller_scores_on_its_own_thread():
    import threading

    from kfkit.serving.batching import AdaptiveBatcher

    passes: list[int] = []
    threads: set[str] = set()
    batcher = AdaptiveBatcher(_slow_sum(0, passes, threads), max_batch_size=8, max_batch_latency_ms=2)
    for i in range(3):
        np.testing.assert_array_equal(batcher.submit_blocking(ROWS + i), (ROWS + i).sum(axis=1))
    assert passes == [2, 2, 2] and threads == {threading.current_thread().name}
    batcher.close()


def test_a_failing_pass_fails_only_its_callers_and_close_refuses_new_ones():
    from kfkit.serving.batching import AdaptiveBatcher

    passes: list[int] = []
    batcher = AdaptiveBatcher(_slow_sum(0.005, passes), max_batch_size=1, max_batch_latency_ms=2)
    batches = [np.full((1, N), float(i), dtype=np.float32) for i in range(6)]
    batches[2] = np.full((1, N), -1.0, dtype=np.float32)
    results = _from_threads(batcher, batches)
    assert isinstance(results[2], ValueError) and "poisoned" in str(results[2])
    for i in (0, 1, 3, 4, 5):
        np.testing.assert_array_equal(results[i], batches[i].sum(axis=1))
    assert passes == [1] * 6  # max_batch_size=1: one request per pass
    batcher.close()
    with pytest.raises(RuntimeError, match="unloading"):
        batcher.submit_blocking(ROWS)


# ------------------------------------------------------------------------------ answers as wire bytes


@pytest.mark.parametrize("rows", [1, 2, 64, 300])
@pytest.mark.parametrize(
    ("outputs", "binary", "request_id"),
    [
        (("probability", "label"), (), "r-1"),
        (("probability", "label"), ("probability", "label"), ""),
        (("label",), (), "x" * 200),
        (("label", "probability"), ("label",), "id"),
    ],
    ids=["contents", "raw", "label-only-long-id", "mixed"],
)
def test_grpc_answer_bytes_equal_the_protobuf_serialization(rows, outputs, binary, request_id):
    """GrpcEncoder writes exactly what ModelInferResponse.SerializeToString() writes for the same answer."""
    from kfkit.serving.encoding import ResponseEncoder
    from kfkit.serving.grpc_protocol import GrpcEncoder
    from kfkit.serving.tensors import ParsedRequest

    rng = np.random.default_rng(rows)
    probabilities = rng.random(rows).astype(np.float32)
    labels = (probabilities >= 0.5).astype(np.int64)
    parsed = ParsedRequest(BIG[:1], request_id or None, outputs, frozenset(binary))
    for version in ("3", None):
        wire = GrpcEncoder("fraud-model", version).encode(parsed, probabilities, labels)
        expected = ResponseEncoder("fraud-model", version).grpc(parsed, probabilities, labels)
        if not request_id:  # generated ids differ between encoders: compare the rest, and that one was set
            answer = pb.ModelInferResponse.FromString(wire)
            assert answer.id
            answer.id = expected.id
            wire = answer.SerializeToString()
        assert wire == expected.SerializeToString()
        answer = pb.ModelInferResponse.FromString(wire)
        assert [o.name for o in answer.outputs] == list(outputs) and answer.model_version == (version or "")
