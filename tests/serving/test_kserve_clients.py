"""KServe's own Python clients against a real kfkit server: answers equal the offline model.

``kserve.InferenceRESTClient`` (V1; V2 with JSON or binary tensors, which writes ``model_name`` in every
body) and ``kserve.InferenceGRPCClient`` (V2 gRPC, contents or raw bytes), beside the tritonclient tests.
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
