"""Protocol details over a live server: V2 binary extension, versioned routes, requested outputs, CloudEvents,
gRPC contents, metadata, and KServe's own routes behind kfkit's front."""

from __future__ import annotations

import json

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

pytestmark = pytest.mark.slow

N = 30


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def _v2(rows: np.ndarray, **extra) -> dict:
    tensor = {"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    return {"inputs": [tensor], **extra}


def test_binary_outputs_and_binary_inputs(live_server, client):
    endpoint, model = live_server.endpoint, live_server.model
    response = client.post(endpoint.v2_url, json=_v2(model.rows, parameters={"binary_data_output": True}))
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header, raw = json.loads(response.content[:length]), response.content[length:]
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert [o["name"] for o in header["outputs"]] == ["probability", "label"] and sizes == [4 * 6, 8 * 6]
    np.testing.assert_allclose(np.frombuffer(raw[:24], "<f4"), model.expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.frombuffer(raw[24:], "<i8"), (model.expected >= 0.5).astype(np.int64))

    data = model.rows.astype("<f4").tobytes()
    tensor = {"name": "features", "shape": [6, N], "datatype": "FP32", "parameters": {"binary_data_size": len(data)}}
    head = json.dumps({"id": "bin-in", "inputs": [tensor]}).encode()
    response = client.post(
        endpoint.v2_url, content=head + data, headers={"inference-header-content-length": str(len(head))}
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "bin-in"
    np.testing.assert_allclose(response.json()["outputs"][0]["data"], model.expected, rtol=0, atol=1e-6)


def test_versioned_route_requested_outputs_and_ids(live_server, client):
    endpoint, model = live_server.endpoint, live_server.model
    url = f"{endpoint.base_url}/v2/models/test-mlp/versions/1/infer"
    response = client.post(url, json=_v2(model.rows[:2], id="abc", outputs=[{"name": "label"}]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["model_name"], body["model_version"], body["id"]) == ("test-mlp", "1", "abc")
    assert body["outputs"] == [
        {"name": "label", "datatype": "INT64", "shape": [2], "data": (model.expected[:2] >= 0.5).astype(int).tolist()}
    ]
    ids = {client.post(endpoint.v2_url, json=_v2(model.rows[:1])).json()["id"] for _ in range(3)}
    assert len(ids) == 3  # a fresh id for each request that sent none
    other = client.post(f"{endpoint.base_url}/v2/models/test-mlp/versions/2/infer", json=_v2(model.rows[:1]))
    assert other.status_code == 404 and "this server serves model 'test-mlp' version 1" in other.json()["error"]


def test_v1_named_features(live_server, client):
    endpoint, model = live_server.endpoint, live_server.model
    names = [f"x{i:02d}" for i in range(N)]
    instances = [dict(zip(reversed(names), reversed(row), strict=True)) for row in model.rows.tolist()]
    response = client.post(endpoint.v1_url, json={"instances": instances})
    assert response.status_code == 200, response.text
    probabilities = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(probabilities, model.expected, rtol=0, atol=1e-6)


def test_cloudevents_are_answered_as_cloudevents(live_server, client):
    endpoint, model = live_server.endpoint, live_server.model
    headers = {"ce-specversion": "1.0", "ce-id": "c1", "ce-source": "test", "ce-type": "request",
               "content-type": "application/json"}  # fmt: skip
    binary = client.post(endpoint.v1_url, json={"instances": model.rows[:1].tolist()}, headers=headers)
    assert binary.status_code == 200, binary.text
    assert binary.headers["ce-type"] == "io.kserve.inference.response"
    assert binary.headers["ce-source"] == "io.kserve.inference.test-mlp" and binary.headers["ce-id"] != "c1"
    assert binary.json()["predictions"][0]["probability"] == pytest.approx(model.expected[0], abs=1e-6)

    envelope = {"specversion": "1.0", "id": "c2", "source": "test", "type": "request", "data": _v2(model.rows[:1])}
    structured = client.post(
        endpoint.v2_url, content=json.dumps(envelope), headers={"content-type": "application/cloudevents+json"}
    )
    assert structured.status_code == 200, structured.text
    assert structured.headers["content-type"] == "application/cloudevents+json"
    event = structured.json()
    assert event["type"] == "io.kserve.inference.response" and event["specversion"] == "1.0"
    assert event["data"]["outputs"][0]["data"][0] == pytest.approx(model.expected[0], abs=1e-6)


def test_grpc_contents_metadata_and_readiness(live_server):
    endpoint, model = live_server.endpoint, live_server.model
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="features", datatype="FP64", shape=[6, N],
        contents=pb.InferTensorContents(fp64_contents=model.rows.astype(np.float64).ravel().tolist()),
    )  # fmt: skip
    with grpc.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(pb.ModelInferRequest(model_name="test-mlp", id="g", inputs=[tensor]), timeout=10)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name="test-mlp"), timeout=10)
        ready = stub.ModelReady(pb.ModelReadyRequest(name="test-mlp", version="1"), timeout=10)
        server = stub.ServerReady(pb.ServerReadyRequest(), timeout=10)
    assert (response.id, response.model_version, len(response.raw_output_contents)) == ("g", "1", 0)
    probability, label = response.outputs
    assert (probability.name, probability.datatype, list(probability.shape)) == ("probability", "FP32", [6])
    np.testing.assert_allclose(probability.contents.fp32_contents, model.expected, rtol=0, atol=1e-6)
    assert list(label.contents.int64_contents) == (model.expected >= 0.5).astype(int).tolist()
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [("features", "FP32", [-1, N])]
    assert [t.name for t in metadata.outputs] == ["probability", "label"] and list(metadata.versions) == ["1"]
    assert ready.ready and server.ready


def test_metadata_and_kserve_routes(live_server, client):
    base = live_server.endpoint.base_url
    model = client.get(f"{base}/v2/models/test-mlp").json()
    assert model["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, N]}]
    assert (model["versions"], model["platform"]) == (["1"], "pytorch")
    assert client.get(f"{base}/v2/models/test-mlp/versions/1").json() == model
    assert client.get(f"{base}/v2").json()["extensions"] == []  # load/unload are refused, so not advertised
    assert client.get(f"{base}/v2/health/live").status_code == 200
    assert client.get(f"{base}/v1/models/test-mlp").json() == {"name": "test-mlp", "ready": True}
    assert client.get(f"{base}/v2/models").json()["models"] == ["test-mlp"]
    missing = client.get(f"{base}/v2/models/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]
