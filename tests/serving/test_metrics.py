"""Prometheus metrics on /metrics: requests by protocol and status, latency, batch sizes, payload events, version."""

from __future__ import annotations

import asyncio

import grpc
import httpx
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from kfkit.serving.metrics import ServerMetrics

N = 30


def _samples(base_url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"{base_url}/metrics", trust_env=False, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("kfkit_")
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset({"model": "test-mlp", **labels}.items())), 0.0)


@pytest.mark.slow
def test_live_server_metrics(live_server):
    endpoint, model = live_server.endpoint, live_server.model
    before = _samples(endpoint.base_url)
    row = model.rows[:1]
    v2_body = {"inputs": [{"name": "features", "shape": [1, N], "datatype": "FP32", "data": row.ravel().tolist()}]}

    async def traffic() -> None:
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            v1 = [client.post(endpoint.v1_url, json={"instances": row.tolist()}) for _ in range(20)]
            v2 = [client.post(endpoint.v2_url, json=v2_body) for _ in range(30)]
            bad = [client.post(endpoint.v2_url, json={"inputs": []}) for _ in range(3)]
            too_big = client.post(endpoint.v1_url, content=b"[" * (live_server.max_body_bytes + 1))
            unknown = client.post(f"{endpoint.base_url}/v2/models/other/infer", json=v2_body)
            responses = await asyncio.gather(*v1, *v2, *bad, too_big, unknown)
        assert [r.status_code for r in responses] == [200] * 50 + [400] * 3 + [413, 404]

    asyncio.run(traffic())
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, N])
    with grpc.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(4):
            stub.ModelInfer(
                pb.ModelInferRequest(model_name="test-mlp", inputs=[tensor], raw_input_contents=[row.tobytes()])
            )
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(pb.ModelInferRequest(model_name="test-mlp"))
    after = _samples(endpoint.base_url)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("kfkit_requests_total", protocol="v1", status="200") == 20
    assert delta("kfkit_requests_total", protocol="v2", status="200") == 30
    assert delta("kfkit_requests_total", protocol="v2", status="400") == 3
    assert delta("kfkit_requests_total", protocol="v1", status="413") == 1
    assert delta("kfkit_requests_total", protocol="v2", status="404") == 1
    assert delta("kfkit_requests_total", protocol="grpc", status="OK") == 4
    assert delta("kfkit_requests_total", protocol="grpc", status="INVALID_ARGUMENT") == 1
    assert delta("kfkit_request_duration_seconds_count", protocol="v2") == 30 + 3 + 1
    assert delta("kfkit_request_duration_seconds_count", protocol="grpc") == 5
    assert delta("kfkit_request_duration_seconds_bucket", protocol="v1", le="+Inf") == 21
    # every scored row went through exactly one forward pass; concurrent requests shared some
    assert delta("kfkit_batch_rows_sum") == 20 + 30 + 4
    assert delta("kfkit_batch_requests_sum") == 20 + 30 + 4
    assert 0 < delta("kfkit_batch_rows_count") < 54
    assert delta("kfkit_forward_seconds_count") == delta("kfkit_batch_rows_count")
    assert delta("kfkit_batch_rows_bucket", le="1.0") < delta("kfkit_batch_rows_count")  # some passes had >1 row
    assert _value(after, "kfkit_model_info", version="1", framework="pytorch", digest=_digest(after)) == 1
    sent_or_dropped = sum(delta("kfkit_payload_log_events_total", outcome=o) for o in ("sent", "dropped", "failed"))
    assert sent_or_dropped > 0  # the live server logs payloads


def _digest(samples: dict) -> str:
    (labels,) = [dict(labels) for name, labels in samples if name == "kfkit_model_info"]
    assert labels["digest"].startswith("sha256:") and len(labels["digest"]) == len("sha256:") + 16
    return labels["digest"]


def test_server_metrics_bind_children_once():
    metrics = ServerMetrics("unit-model")
    metrics.request("v2", 200, 0.001)
    metrics.request("v2", 200, 0.003)
    metrics.request("custom", "OK", 0.5)
    metrics.batch(rows=8, requests=3, seconds=0.0002)
    metrics.payload("dropped", 2)
    metrics.model_info(version="4", framework="tensorflow", digest="sha256:abc")
    from prometheus_client import REGISTRY

    def get(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"model": "unit-model", **labels})

    assert get("kfkit_requests_total", protocol="v2", status="200") == 2
    assert get("kfkit_request_duration_seconds_sum", protocol="v2") == pytest.approx(0.004)
    assert get("kfkit_requests_total", protocol="custom", status="OK") == 1
    assert get("kfkit_batch_rows_sum") == 8 and get("kfkit_batch_requests_sum") == 3
    assert get("kfkit_payload_log_events_total", outcome="dropped") == 2
    assert get("kfkit_model_info", version="4", framework="tensorflow", digest="sha256:abc") == 1
