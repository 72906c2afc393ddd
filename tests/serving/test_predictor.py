"""The predictor behind the fronts: V1 and V2 answers over real requests equal offline scoring; bad input is a 400.

The predictor is scored only through the server's fronts (REST V1/V2, V2 gRPC); KServe's own ``predict``
hook is not a request path. The in-process tests cover loading: the lean forward, metadata, refusals.
"""

from __future__ import annotations

import json
import random
import re
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from kfkit import errors
from kfkit.model import predict_proba
from kfkit.registry import resolve
from kfkit.serving.predictor import KfkitPredictor

N = 30
NAMES = [f"x{i:02d}" for i in range(N)]  # as in conftest.FEATURE_NAMES


@pytest.fixture(scope="module")
def setup(publish_random_mlp) -> SimpleNamespace:
    """A published random MLP (threshold 0.4) and a loaded predictor for it."""
    published = publish_random_mlp("predictor", seed=0, n_rows=8, threshold=0.4)
    predictor = KfkitPredictor("test-mlp", resolve(published.uri))
    assert predictor.load() and predictor.ready
    published.predictor = predictor
    yield published
    predictor.stop()


@pytest.fixture(scope="module")
def served(setup, free_port):
    """A real server for the same published model: (endpoint, httpx client)."""
    from kfkit.deploy.local import start_server, stop_server

    endpoint = start_server(
        setup.uri, model_name="test-mlp", http_port=free_port(), grpc_port=free_port(),
        log_path=setup.root / "logs" / "server.log", timeout_s=120,
    )  # fmt: skip
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield SimpleNamespace(endpoint=endpoint, client=client)
    stop_server(endpoint)


def _v2_body(data, shape, datatype="FP32", name="features") -> dict:
    return {"inputs": [{"name": name, "shape": list(shape), "datatype": datatype, "data": data}]}


def _post_v2(served, body: dict) -> httpx.Response:
    """POST a V2 body; values JSON cannot carry (NaN, inf) go as binary tensor data, as a client must send them."""
    tensor = body["inputs"][0] if len(body.get("inputs", ())) == 1 else None
    data = tensor.get("data") if tensor else None
    if isinstance(data, list) and any(isinstance(v, float) and not np.isfinite(v) for v in data):
        raw = np.asarray(data, dtype="<f4").tobytes()
        head = {k: v for k, v in tensor.items() if k != "data"} | {"parameters": {"binary_data_size": len(raw)}}
        header = json.dumps({**body, "inputs": [head]}).encode()
        headers = {"inference-header-content-length": str(len(header))}
        return served.client.post(served.endpoint.v2_url, content=header + raw, headers=headers)
    return served.client.post(served.endpoint.v2_url, json=body)


def _infer_response(response: httpx.Response) -> InferResponse:
    assert response.status_code == 200, response.text
    length = int(response.headers.get("inference-header-content-length", len(response.content)))
    return InferResponse.from_bytes(response.content, length)


def _check_v2(response: InferResponse, expected: np.ndarray, threshold: float) -> None:
    probability, label = (response.get_output_by_name(n) for n in ("probability", "label"))
    assert (probability.datatype, probability.shape) == ("FP32", [len(expected)])
    assert (label.datatype, label.shape) == ("INT64", [len(expected)])
    np.testing.assert_allclose(probability.as_numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label.as_numpy(), (expected >= threshold).astype(np.int64))


@pytest.mark.slow
def test_v1_rows_match_offline(setup, served):
    result = served.client.post(served.endpoint.v1_url, json={"instances": setup.rows.tolist()}).json()
    predictions = result["predictions"]
    np.testing.assert_allclose([p["probability"] for p in predictions], setup.expected, rtol=0, atol=1e-6)
    assert [p["label"] for p in predictions] == [int(p >= 0.4) for p in setup.expected]
    assert {p["label"] for p in predictions} == {0, 1}, "pick rows/threshold so both labels occur"


@pytest.mark.slow
def test_v1_named_features_in_any_order(setup, served):
    instances = []
    for row in setup.rows.tolist():
        pairs = list(zip(NAMES, row, strict=True))
        random.Random(len(instances)).shuffle(pairs)
        instances.append(dict(pairs))
    result = served.client.post(served.endpoint.v1_url, json={"instances": instances}).json()
    np.testing.assert_allclose([p["probability"] for p in result["predictions"]], setup.expected, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("datatype", "nested"), [("FP32", False), ("FP64", True), ("INT64", False)], ids=["fp32-flat", "fp64-nested", "int"]
)
def test_v2_rest_matches_offline(setup, served, datatype, nested):
    rows = np.round(setup.rows) if datatype == "INT64" else setup.rows.astype(np.float64)
    data = rows.astype(np.int64).tolist() if datatype == "INT64" else rows.tolist()
    if not nested:
        data = [v for row in data for v in row]
    response = _infer_response(_post_v2(served, _v2_body(data, rows.shape, datatype)))
    _check_v2(response, predict_proba(setup.model, rows), setup.spec.threshold)
    assert response.model_name == "test-mlp"


@pytest.mark.slow
def test_v2_grpc_binary_request_matches_offline(setup, served):
    tensor = InferInput("features", list(setup.rows.shape), "FP32")
    tensor.set_data_from_numpy(setup.rows, binary_data=True)
    grpc_request = InferRequest(model_name="test-mlp", infer_inputs=[tensor], request_id="r1").to_grpc()
    assert grpc_request.raw_input_contents, "the request should carry raw bytes"
    with grpc.insecure_channel(served.endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        reply = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(grpc_request, timeout=30)
    response = InferResponse.from_grpc(reply)
    assert response.id == "r1"
    _check_v2(response, setup.expected, setup.spec.threshold)


def test_v2_metadata_describes_the_tensors(setup):
    assert setup.predictor.get_input_types() == [{"name": "features", "datatype": "FP32", "shape": [-1, N]}]
    assert setup.predictor.get_output_types() == [
        {"name": "probability", "datatype": "FP32", "shape": [-1]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]


def test_v2_metadata_parameters_say_how_to_build_a_request(served, setup):
    """Feature names in input order and the threshold, so a client can build a named V1 row or read a label."""
    meta = served.client.get(served.endpoint.v2_url.removesuffix("/infer")).json()
    assert meta["parameters"] == {"feature_names": list(setup.spec.feature_names), "threshold": setup.spec.threshold}


def test_missing_feature_error_lists_every_missing_name(served):
    row = {n: 1.0 for n in NAMES[12:]}  # 12 of 30 left out: more than a message usually quotes
    response = served.client.post(served.endpoint.v1_url, json={"instances": [row]})
    assert response.status_code == 400
    error = response.json()["error"]
    listed = error.split("missing ", 1)[1].split(";", 1)[0]
    assert [name.strip("' ") for name in listed.split(",")] == NAMES[:12], error


ROW = [0.5] * N

BAD_V1 = {
    "empty batch": ({"instances": []}, r"instances is empty; send at least one row of 30 numbers"),
    "no instances": ({"rows": [ROW]}, r'expected \{"instances".*got keys \[\'rows\'\]'),
    "narrow row": ({"instances": [ROW[:29]]}, r"each row needs 30 numbers \(x00, x01, \.\.\.\), got 29"),
    "ragged rows": ({"instances": [ROW, ROW[:3]]}, r"instances\[1\] has 3 values; every row needs 30 numbers"),
    "flat row": ({"instances": ROW}, r"list of rows \(2-D\), got 1-D; wrap a single row in a list"),
    "nan": ({"instances": [ROW[:4] + [float("nan")] + ROW[5:]]}, r"1 NaN, infinite .* \(row 0 feature 'x04'\)"),
    "inf": ({"instances": [ROW, ROW[:-1] + [float("-inf")]]}, r"row 1 feature 'x29'"),
    "beyond float32": ({"instances": [[1e300] * N]}, r"30 NaN, infinite or beyond-float32 values"),
    "string": ({"instances": [ROW[:2] + ["abc"] + ROW[3:]]}, r"instances\[0\]\[2\] \(feature 'x02'\) is 'abc', not a"),
    "null": ({"instances": [[None] * N]}, r"instances\[0\]\[0\] \(feature 'x00'\) is null, not a number"),
    "bool": ({"instances": [[True] * N]}, r"is True, not a number"),
    "missing name": ({"instances": [{n: 1.0 for n in NAMES[1:]}]}, r"instances\[0\]: missing 'x00'; the model takes"),
    "unknown name": (
        {"instances": [{**{n: 1.0 for n in NAMES}, "amount": 3}]},
        r"instances\[0\]: unknown 'amount'; the model takes exactly these 30 features",
    ),
    "mixed rows": ({"instances": [dict(zip(NAMES, ROW, strict=True)), ROW]}, r"instances\[1\] is an array"),
}


@pytest.mark.slow
@pytest.mark.parametrize(("payload", "message"), BAD_V1.values(), ids=BAD_V1.keys())
def test_bad_v1_input_is_invalid_input(served, validator, payload, message):
    try:
        body = json.dumps(payload, allow_nan=False).encode()
    except ValueError:  # NaN and inf are not JSON: no V1 client can send them, and the front says so
        response = served.client.post(served.endpoint.v1_url, content=json.dumps(payload).encode())
        assert response.status_code == 400 and "NaN and Infinity are not JSON" in response.json()["error"]
        with pytest.raises(errors.InvalidInput, match=message):  # what the V1 checks say of such rows
            validator.v1(payload)
        return
    response = served.client.post(served.endpoint.v1_url, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]


BAD_V2 = {
    "bytes datatype": (_v2_body(["a"] * N, [1, N], "BYTES"), r"datatype BYTES; send FP32"),
    "bool datatype": (_v2_body([True] * N, [1, N], "BOOL"), r"datatype BOOL"),
    "shape vs data": (_v2_body(ROW, [2, N]), r"shape \[2, 30\] and 30 values; send shape \[N, 30\]"),
    "1-D shape": (_v2_body(ROW, [N]), r"shape \[30\] and 30 values"),
    "wrong width": (_v2_body(ROW + ROW[:2], [2, 16]), r"each row needs 30 numbers .* got 16"),
    "empty": (_v2_body([], [0, N]), r"input 'features' is empty"),
    "string value": (
        _v2_body(ROW[:7] + ["1.5"] + ROW[8:], [1, N]),
        r"input 'features'\[7\] \(feature 'x07'\) is '1.5', not a number",
    ),
    "nan": (_v2_body(ROW[:-1] + [float("nan")], [1, N]), r"row 0 feature 'x29'"),
    "two inputs": (
        {"inputs": [_v2_body(ROW, [1, N])["inputs"][0], _v2_body(ROW, [1, N], name="b")["inputs"][0]]},
        r"expected exactly 1 input tensor .* got 2: 'features', 'b'",
    ),
    "no inputs": ({"inputs": []}, r"got 0: none"),
}


@pytest.mark.slow
@pytest.mark.parametrize(("body", "message"), BAD_V2.values(), ids=BAD_V2.keys())
def test_bad_v2_input_is_invalid_input(served, body, message):
    response = _post_v2(served, body)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"]), response.json()["error"]


@pytest.mark.slow
def test_binary_v2_data_that_does_not_fit_its_shape_is_invalid_input(setup, served):
    tensor = InferInput("features", [2, N], "FP32")
    tensor.set_data_from_numpy(setup.rows[:2], binary_data=True)
    grpc_request = InferRequest(model_name="test-mlp", infer_inputs=[tensor]).to_grpc()
    grpc_request.inputs[0].shape[:] = [3, N]
    with grpc.insecure_channel(served.endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(grpc_request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert re.search(r"input 'features' has 240 bytes of binary data, but shape \[3, 30\]", caught.value.details())


@pytest.mark.slow
@pytest.mark.parametrize("payload", [[ROW], "text"], ids=["list", "str"])
def test_non_object_body_is_invalid_input(served, payload):
    response = served.client.post(served.endpoint.v1_url, json=payload)
    assert response.status_code == 400
    assert re.search(r"not a JSON object; send \{\"instances\"", response.json()["error"])


def test_load_of_a_folder_without_a_model_fails_clearly(tmp_path):
    predictor = KfkitPredictor("m", tmp_path)
    with pytest.raises(errors.ModelLoadError, match="model.json is missing"):
        predictor.load()
    assert not predictor.ready
    assert predictor.get_input_types() == []


def test_kfkit_mlp_is_scored_by_the_lean_forward_bit_identically(setup):
    """The predictor binds the MLP's weights once and skips nn.Module dispatch; the numbers must not change."""
    import torch

    from kfkit.serving.predictor import _lean_mlp

    score = setup.predictor._score_rows
    assert score.__qualname__ == "_lean_mlp.<locals>.forward"
    rows = np.concatenate([setup.rows, setup.rows * 3 - 1])
    np.testing.assert_array_equal(score(rows), predict_proba(setup.model, rows))
    other = torch.nn.Sequential(torch.nn.Linear(N, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    assert _lean_mlp(other) is None  # anything but kfkit's Linear/ReLU/Dropout stack keeps the module's forward


def test_unknown_framework_is_refused(tmp_path):
    (tmp_path / "model.json").write_text(json.dumps({"name": "m", "feature_names": NAMES, "hidden_dims": [4],
                                                     "framework": "onnx"}))  # fmt: skip
    with pytest.raises(errors.ModelLoadError, match=r"framework='onnx'; kfkit serves pytorch or tensorflow"):
        KfkitPredictor("m", tmp_path).load()


def test_kserve_predict_hook_is_not_a_request_path(setup):
    """Every request goes through a front; KServe's own predict hook is KServe's default (it has no predictor)."""
    import kserve

    assert KfkitPredictor.predict is kserve.Model.predict
