"""Payload logging: request/response CloudEvents in KServe's logger format reach a real receiver, and a slow or
dead receiver costs dropped (counted) events, never slower predictions."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket
import time
import uuid

import grpc
import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from kfkit.serving.payload_logger import REQUEST_EVENT, RESPONSE_EVENT, PayloadLogger

N = 30
KSERVE_HEADERS = ("ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "ce-inferenceservicename",
                  "ce-namespace", "ce-component", "ce-endpoint", "ce-metadata")  # fmt: skip


def _events_for(receiver, event_id: str, count: int = 2, timeout_s: float = 10.0) -> list[tuple[dict, bytes]]:
    events = receiver.wait_for(lambda evs: sum(h.get("ce-id") == event_id for h, _ in evs) >= count, timeout_s)
    found = [(h, b) for h, b in events if h.get("ce-id") == event_id]
    assert len(found) == count, f"expected {count} events with ce-id {event_id}, got {len(found)}"
    return sorted(found, key=lambda e: e[0]["ce-type"])  # request first


def test_pairs_arrive_in_kserve_logger_format(payload_receiver):
    logger = PayloadLogger(
        payload_receiver.url, model_name="fraud", model_version="3", queue_size=10, source="http://me", namespace="ns"
    )
    built = []

    async def run() -> None:
        for i in range(3):
            logger.log(event_id=f"pair-{i}", content_type="application/json", request=f'{{"r": {i}}}'.encode(),
                       response=lambda i=i: built.append(i) or f'{{"p": {i}}}'.encode())  # fmt: skip
        assert await logger.drain(10)
        await logger.close()

    asyncio.run(run())
    assert (logger.sent, logger.failed, logger.dropped) == (6, 0, 0)
    assert sorted(built) == [0, 1, 2]  # lazy bodies are built by the sender
    for i in range(3):
        (req_headers, req_body), (resp_headers, resp_body) = _events_for(payload_receiver, f"pair-{i}")
        assert (req_headers["ce-type"], resp_headers["ce-type"]) == (REQUEST_EVENT, RESPONSE_EVENT)
        assert (json.loads(req_body), json.loads(resp_body)) == ({"r": i}, {"p": i})
        for headers in (req_headers, resp_headers):
            assert all(h in headers for h in KSERVE_HEADERS), sorted(headers)
            assert headers["ce-specversion"] == "1.0" and headers["content-type"] == "application/json"
            assert (headers["ce-source"], headers["ce-inferenceservicename"], headers["ce-namespace"]) == (
                "http://me", "fraud", "ns",
            )  # fmt: skip
            assert (headers["ce-component"], headers["ce-endpoint"], headers["ce-modelversion"]) == (
                "predictor", "default", "3",
            )  # fmt: skip
            assert datetime.datetime.fromisoformat(headers["ce-time"]).tzinfo is not None


def test_slow_receiver_costs_drops_not_time(payload_receiver):
    payload_receiver.delay_s = 1.0
    logger = PayloadLogger(payload_receiver.url, model_name="m", queue_size=4, senders=1, timeout_s=5)
    try:

        async def run() -> float:
            longest = 0.0
            for i in range(50):
                started = time.perf_counter()
                logger.log(event_id=f"slow-{i}", content_type="application/json", request=b"{}", response=b"{}")
                longest = max(longest, time.perf_counter() - started)
                await asyncio.sleep(0)
            await logger.close()
            return longest

        longest = asyncio.run(run())
    finally:
        payload_receiver.delay_s = 0.0
    assert longest < 0.01, f"log() blocked for {longest * 1000:.1f} ms"
    # 2 pairs fit the queue and 1 is being sent: the other 47 pairs were dropped, and counted
    assert logger.dropped >= 2 * 45, (logger.sent, logger.failed, logger.dropped)


def test_dead_receiver_counts_failures():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    logger = PayloadLogger(f"http://127.0.0.1:{port}/", model_name="m", queue_size=10, timeout_s=2)

    async def run() -> None:
        for i in range(3):
            assert logger.log(event_id=str(i), content_type="application/json", request=b"{}", response=b"{}")
        assert await logger.drain(10)
        await logger.close()

    asyncio.run(run())
    assert (logger.sent, logger.failed, logger.dropped) == (0, 6, 0)


def test_bad_url_is_refused():
    with pytest.raises(ValueError, match="must start with http"):
        PayloadLogger("ftp://x", model_name="m")


@pytest.mark.slow
def test_live_server_logs_v1_v2_cloudevent_and_grpc_pairs(live_server, payload_receiver):
    endpoint, model = live_server.endpoint, live_server.model
    rows = model.rows[:2]
    with httpx.Client(timeout=10, trust_env=False) as client:
        v2_body = json.dumps({"inputs": [{"name": "features", "shape": [2, N], "datatype": "FP32",
                                          "data": rows.ravel().tolist()}]}).encode()  # fmt: skip
        v2 = client.post(endpoint.v2_url, content=v2_body, headers={"x-request-id": "req-v2"})
        ce = client.post(endpoint.v1_url, content=json.dumps({"instances": rows.tolist()}).encode(),
                         headers={"ce-specversion": "1.0", "ce-id": "ce-v1", "ce-source": "test", "ce-type": "t",
                                  "content-type": "application/json"})  # fmt: skip
        refused = client.post(endpoint.v2_url, content=b'{"inputs": []}', headers={"x-request-id": "req-bad"})
    assert v2.status_code == 200 and ce.status_code == 200 and refused.status_code == 400
    (_, request), (_, response) = _events_for(payload_receiver, "req-v2")
    assert request == v2_body and json.loads(response) == v2.json()
    (_, request), (_, response) = _events_for(payload_receiver, "ce-v1")
    assert json.loads(request) == {"instances": rows.tolist()} and json.loads(response) == ce.json()

    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[2, N])
    message = pb.ModelInferRequest(
        model_name="test-mlp", id="req-grpc", inputs=[tensor], raw_input_contents=[rows.tobytes()]
    )
    with grpc.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=10)
    (_, request), (_, response) = _events_for(payload_receiver, "req-grpc")
    sent = json.loads(request)["inputs"][0]
    assert sent["shape"] == [2, N]
    np.testing.assert_allclose(sent["data"], rows, rtol=1e-6)
    outputs = {o["name"]: o["data"] for o in json.loads(response)["outputs"]}
    np.testing.assert_allclose(outputs["probability"], model.expected[:2], atol=1e-6)
    assert not [h for h, _ in payload_receiver.events if h.get("ce-id") == "req-bad"]  # refused requests are not logged


@pytest.mark.slow
def test_live_server_predictions_stay_fast_when_the_receiver_stalls(live_server, payload_receiver):
    endpoint, model = live_server.endpoint, live_server.model
    body = {"instances": model.rows[:1].tolist()}

    def dropped() -> float:
        text = httpx.get(f"{endpoint.base_url}/metrics", trust_env=False).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "kfkit_payload_log_events_total" and sample.labels.get("outcome") == "dropped":
                    return sample.value
        return 0.0

    before = dropped()
    payload_receiver.delay_s = 3.0
    try:

        async def burst() -> list[float]:
            async with httpx.AsyncClient(timeout=10, trust_env=False) as client:

                async def one() -> float:
                    started = time.perf_counter()
                    response = await client.post(endpoint.v1_url, json=body, headers={"x-request-id": uuid.uuid4().hex})
                    assert response.status_code == 200, response.text
                    return time.perf_counter() - started

                return await asyncio.gather(*(one() for _ in range(120)))

        latencies = sorted(asyncio.run(burst()))
    finally:
        payload_receiver.delay_s = 0.0
    # The queue holds 8 events (4 pairs) and the senders are stuck for 3 s each: most pairs must be dropped,
    # and no prediction waited for the receiver.
    assert dropped() - before >= 2 * (120 - 4 - 2), (before, dropped())
    assert latencies[int(0.95 * len(latencies))] < 2.0, latencies[-5:]
