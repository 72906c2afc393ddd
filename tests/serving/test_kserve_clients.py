"""KServe's and NVIDIA Triton's Python clients against a real kfkit server: answers equal the offline model.

``kserve.InferenceRESTClient`` (V1; V2 with JSON or binary tensors, which writes ``model_name`` in every
body), ``kserve.InferenceGRPCClient`` (V2 gRPC, contents or raw bytes) and ``tritonclient.grpc`` (raw
tensors, readiness, metadata, the sync and the asyncio client, errors), on the server's gRPC stack.
"""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import orjson
import pytest
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

pytestmark = pytest.mark.slow

NAME = "test-mlp"  # the live_server's model name and version 1


def _rest_client(protocol: str) -> InferenceRESTClient:
    # An explicit transport: no proxy from the environment between the client and 127.0.0.1.
    return InferenceRESTClient(RESTConfig(protocol=protocol, transport=httpx.AsyncHTTPTransport(), timeout=30))


def _request(rows: np.ndarray, *, binary: bool, **kwargs) -> InferRequest:
    tensor = InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return InferRequest(model_name=kwargs.pop("model_name", NAME), infer_inputs=[tensor], **kwargs)


def _check(response: InferResponse, expected: np.ndarray) -> None:
    probability, label = (response.get_output_by_name(n) for n in ("probability", "label"))
    assert (probability.datatype, probability.shape, label.datatype) == ("FP32", [len(expected)], "INT64")
    np.testing.assert_allclose(probability.as_numpy(), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label.as_numpy(), (expected >= 0.5).astype(np.int64))


def test_rest_client_v1(live_server):
    endpoint, model = live_server.endpoint, live_server.model

    async def run() -> dict:
        async with _rest_client("v1") as client:
            return await client.infer(endpoint.base_url, {"instances": model.rows.tolist()}, model_name=NAME)

    predictions = asyncio.run(run())["predictions"]
    np.testing.assert_allclose([p["probability"] for p in predictions], model.expected, rtol=0, atol=1e-6)
    assert [p["label"] for p in predictions] == (model.expected >= 0.5).astype(int).tolist()


@pytest.mark.parametrize(
    ("binary", "parameters"),
    [(True, None), (True, {"binary_data_output": True}), (False, None)],
    ids=["binary-in", "binary-in-and-out", "json"],
)
def test_rest_client_v2(live_server, binary, parameters):
    """The client writes model_name in the body (and binary tensors after the JSON part): both are accepted."""
    endpoint, model = live_server.endpoint, live_server.model
    request = _request(model.rows, binary=binary, request_id="kserve-rest", parameters=parameters)
    body, json_length = request.to_rest()  # what the client sends
    assert (json_length is not None) == binary  # the binary extension, when asked for
    assert (orjson.loads(body[:json_length]) if binary else body)["model_name"] == NAME
    request = _request(model.rows, binary=binary, request_id="kserve-rest", parameters=parameters)

    async def run() -> InferResponse:
        async with _rest_client("v2") as client:
            return await client.infer(endpoint.base_url, request, model_name=NAME)

    response = asyncio.run(run())
    assert (response.model_name, response.id) == (NAME, "kserve-rest")
    _check(response, model.expected)


def test_rest_client_v2_with_another_model_name_in_the_body_is_400_naming_both(live_server):
    endpoint, model = live_server.endpoint, live_server.model
    request = _request(model.rows, binary=True, model_name="fraud-model")

    async def run() -> None:
        async with _rest_client("v2") as client:
            await client.infer(endpoint.base_url, request, model_name=NAME)

    with pytest.raises(httpx.HTTPStatusError) as caught:
        asyncio.run(run())
    assert caught.value.response.status_code == 400
    error = caught.value.response.json()["error"]
    assert "'fraud-model'" in error and f"'{NAME}'" in error, error


@pytest.mark.parametrize("binary", [True, False], ids=["raw", "contents"])
def test_grpc_client(live_server, binary):
    endpoint, model = live_server.endpoint, live_server.model

    async def run() -> InferResponse:
        client = InferenceGRPCClient(endpoint.grpc_target, channel_args=[("grpc.enable_http_proxy", 0)], timeout=30)
        async with client:
            return await client.infer(_request(model.rows, binary=binary, request_id="kserve-grpc"))

    response = asyncio.run(run())
    assert (response.model_name, response.id) == (NAME, "kserve-grpc")
    _check(response, model.expected)


# tritonclient and kserve register the same protobuf package (inference.*) in protobuf's default pool, so one
# process cannot import both: the Triton client runs in a fresh interpreter and prints what it saw as JSON.
_TRITON_CLIENT = r"""
import asyncio, json, sys
import numpy as np
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException

target, name = sys.argv[1], sys.argv[2]
rows = np.asarray(json.loads(sys.stdin.read()), dtype=np.float32)
options = [("grpc.enable_http_proxy", 0)]


def inputs(batch):
    tensor = triton.InferInput("features", list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)  # raw_input_contents, as tritonclient always sends
    return [tensor]


def failure(call):
    try:
        call()
    except InferenceServerException as e:
        return [e.status(), e.message()]
    return None


client = triton.InferenceServerClient(target, channel_args=options)
outputs = [triton.InferRequestedOutput("probability"), triton.InferRequestedOutput("label")]
result = client.infer(name, inputs(rows), outputs=outputs, request_id="triton-grpc")
metadata = client.get_model_metadata(name)
seen = {
    "ready": [client.is_server_live(), client.is_server_ready(), client.is_model_ready(name)],
    "input": [metadata.inputs[0].name, list(metadata.inputs[0].shape)],
    "probability": result.as_numpy("probability").tolist(),
    "label": result.as_numpy("label").tolist(),
    "id": result.get_response().id,
    "narrow": failure(lambda: client.infer(name, inputs(rows[:, :29]))),
    "other": failure(lambda: client.infer("other-model", inputs(rows))),
}
client.close()


async def concurrent():
    aio_client = triton_aio.InferenceServerClient(target, channel_args=options)
    try:
        batches = [np.roll(rows, i, axis=0)[: 1 + i % len(rows)] for i in range(24)]
        answers = await asyncio.gather(*(aio_client.infer(name, inputs(b)) for b in batches))
        return [a.as_numpy("probability").tolist() for a in answers]
    finally:
        await aio_client.close()


seen["concurrent"] = asyncio.run(concurrent())
print(json.dumps(seen))
"""


def test_tritonclient_grpc(live_server):
    """NVIDIA's tritonclient (sync and asyncio) against the server: answers, readiness, metadata, error codes."""
    import json
    import subprocess
    import sys

    endpoint, model = live_server.endpoint, live_server.model
    result = subprocess.run(
        [sys.executable, "-P", "-c", _TRITON_CLIENT, endpoint.grpc_target, NAME],
        input=json.dumps(model.rows.tolist()), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["ready"] == [True, True, True] and seen["id"] == "triton-grpc"
    assert seen["input"] == ["features", [-1, model.rows.shape[1]]]
    np.testing.assert_allclose(seen["probability"], model.expected, rtol=0, atol=1e-6)
    assert seen["label"] == (model.expected >= 0.5).astype(int).tolist()
    assert seen["narrow"][0] == "StatusCode.INVALID_ARGUMENT" and "30 numbers" in seen["narrow"][1]
    assert seen["other"][0] == "StatusCode.NOT_FOUND" and "'other-model'" in seen["other"][1]
    # 24 concurrent calls (sharing forward passes on the server) each get the scores of their own rows
    for i, probabilities in enumerate(seen["concurrent"]):
        want = np.roll(model.expected, i)[: 1 + i % len(model.rows)]
        np.testing.assert_allclose(probabilities, want, rtol=0, atol=1e-6)
