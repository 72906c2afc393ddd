"""A real local KServe server: V1, V2 REST and V2 gRPC answers equal offline scoring; start/stop and failures."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from kfkit.deploy.local import LocalEndpoint, ensure_port_free, infer_v2, start_server, stop_server
from kfkit.errors import ServingError
from kfkit.registry import publish_folder

pytestmark = pytest.mark.slow

N = 30


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture(scope="module")
def model(publish_random_mlp) -> SimpleNamespace:
    """A random MLP with non-trivial standardisation, published as test-mlp version 1."""
    return publish_random_mlp("server", seed=1, n_rows=5)


@pytest.fixture(scope="module")
def endpoint(model) -> LocalEndpoint:
    """One server for the module (start-up costs seconds); the last test stops it."""
    http_port, grpc_port = _free_ports(2)
    started = start_server(
        model.uri,
        model_name="test-mlp",
        http_port=http_port,
        grpc_port=grpc_port,
        log_path=model.root / "logs" / "server.log",
        timeout_s=90,
    )
    yield started
    stop_server(started)


@pytest.fixture
def tampered_uri(model, tmp_path) -> str:
    """A fresh version whose weights changed after publishing (one byte flipped)."""
    version = publish_folder(model.model_dir, registry_uri=f"file://{tmp_path}/reg", name="test-mlp")
    weights = Path(version.path) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return version.uri


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=10, trust_env=False) as c:
        yield c


def test_v1_rest_matches_offline(endpoint, model, client):
    response = client.post(endpoint.v1_url, json={"instances": model.rows.tolist()})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    np.testing.assert_allclose([p["probability"] for p in predictions], model.expected, rtol=0, atol=1e-6)
    assert [p["label"] for p in predictions] == [int(p >= 0.5) for p in model.expected]


def test_v2_rest_matches_offline(endpoint, model, client):
    body = {"inputs": [{"name": "features", "shape": [5, N], "datatype": "FP32", "data": model.rows.ravel().tolist()}]}
    response = client.post(endpoint.v2_url, json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert (outputs["probability"]["datatype"], outputs["probability"]["shape"]) == ("FP32", [5])
    assert (outputs["label"]["datatype"], outputs["label"]["shape"]) == ("INT64", [5])
    np.testing.assert_allclose(outputs["probability"]["data"], model.expected, rtol=0, atol=1e-6)
    assert outputs["label"]["data"] == [int(p >= 0.5) for p in model.expected]


def test_infer_v2_helper_and_metadata(endpoint, model, client):
    result = infer_v2(endpoint, model.rows.tolist())
    probability = next(o for o in result["outputs"] if o["name"] == "probability")
    np.testing.assert_allclose(probability["data"], model.expected, rtol=0, atol=1e-6)
    metadata = client.get(f"{endpoint.base_url}/v2/models/test-mlp").json()
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, N]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probability", "label"]


def test_v2_grpc_matches_offline(endpoint, model):
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

    tensor = InferInput("features", [5, N], "FP32")
    tensor.set_data_from_numpy(model.rows, binary_data=True)
    request = InferRequest(model_name="test-mlp", infer_inputs=[tensor]).to_grpc()
    with grpc.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        response = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    probability = InferResponse.from_grpc(response).get_output_by_name("probability").as_numpy()
    np.testing.assert_allclose(probability, model.expected, rtol=0, atol=1e-6)


def _batch_metrics(endpoint) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{endpoint.base_url}/metrics", timeout=10, trust_env=False).text
    wanted = {"kfkit_batch_rows_sum", "kfkit_batch_requests_sum", "kfkit_batch_requests_count"}
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted and sample.labels.get("model") == "test-mlp"
    }


def _infer_request(rows: np.ndarray):
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    return pb.ModelInferRequest(model_name="test-mlp", inputs=[tensor])


def test_concurrent_grpc_calls_share_forward_passes(endpoint, model):
    """The sync gRPC stack's handler threads still batch: concurrent calls are merged into one pass (the
    batch metric counts passes with more than one request), and each call gets its own rows' scores."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    calls = [np.roll(model.rows, i, axis=0) for i in range(48)]
    expected = [np.roll(model.expected, i) for i in range(48)]

    async def burst() -> list:
        async with grpc.aio.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as ch:
            infer = ch.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=pb.ModelInferRequest.SerializeToString,
                response_deserializer=pb.ModelInferResponse.FromString,
            )
            return await asyncio.gather(*(infer(_infer_request(rows), timeout=30) for rows in calls))

    before = _batch_metrics(endpoint)
    for _ in range(5):  # merging depends on timing: a few bursts, so one without a merge does not fail the test
        for response, want in zip(asyncio.run(burst()), expected, strict=True):
            np.testing.assert_allclose(response.outputs[0].contents.fp32_contents, want, rtol=0, atol=1e-6)
        after = _batch_metrics(endpoint)
        requests = after["kfkit_batch_requests_sum"] - before["kfkit_batch_requests_sum"]
        passes = after["kfkit_batch_requests_count"] - before["kfkit_batch_requests_count"]
        if passes < requests:
            break
    assert after["kfkit_batch_rows_sum"] - before["kfkit_batch_rows_sum"] == requests * len(model.rows)
    assert passes < requests, f"{requests:.0f} concurrent gRPC calls took {passes:.0f} forward passes"


def test_curl_example_is_a_working_command(endpoint, model):
    command = endpoint.curl_example(model.rows[0].tolist())
    assert command.startswith("curl ")
    result = subprocess.run(
        shlex.split(command), capture_output=True, text=True, timeout=30, env={"PATH": os.environ["PATH"]}
    )
    assert result.returncode == 0, result.stderr
    probability = next(o for o in json.loads(result.stdout)["outputs"] if o["name"] == "probability")
    assert probability["data"] == pytest.approx([model.expected[0]], abs=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("v1", {"instances": [[1.0] * 29]}, "each row needs 30 numbers"),
        ("v1", {"instances": [{"x00": 1.0}]}, "missing 'x01'"),
        ("v2", {"inputs": [{"name": "features", "shape": [1, N], "datatype": "BYTES", "data": ["a"] * N}]}, "BYTES"),
        ("v2", {"inputs": [{"name": "features", "shape": [2, N], "datatype": "FP32", "data": [1.0] * N}]}, "shape"),
    ],
    ids=["v1-width", "v1-names", "v2-datatype", "v2-shape"],
)
def test_bad_request_is_400_with_json_error_and_server_stays_ready(endpoint, client, path, body, message):
    url = endpoint.v1_url if path == "v1" else endpoint.v2_url
    response = client.post(url, json=body)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert client.get(f"{endpoint.base_url}/v2/health/ready").status_code == 200


def test_endpoint_round_trips_through_json(endpoint):
    again = LocalEndpoint.from_dict(json.loads(json.dumps(endpoint.to_dict())))
    assert again == endpoint
    assert again.v1_url.endswith("/v1/models/test-mlp:predict") and again.v2_url.endswith("/v2/models/test-mlp/infer")
    with pytest.raises(ServingError, match="not a local endpoint description"):
        LocalEndpoint.from_dict({"pid": 1})


def test_binds_loopback_only(endpoint):
    if not _has("ss"):
        pytest.skip("missing tool: ss (Debian's iproute2; scripts/install_system_tools.sh installs it)")
    out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=True).stdout
    for port in (endpoint.http_port, endpoint.grpc_port):
        listening = [line.split()[3] for line in out.splitlines() if f":{port} " in line + " "]
        assert listening, f"nothing listens on port {port} according to ss: {out[-500:]}"  # the check saw the port
        assert not any(a.startswith(("0.0.0.0", "*", "[::]")) for a in listening), listening


def test_port_in_use_fails_at_once_with_the_fix(endpoint, model, tmp_path):
    started = time.monotonic()
    with pytest.raises(
        ServingError, match=rf"port {endpoint.http_port} on 127.0.0.1 is already in use.*serving\.http_port=\d+"
    ):
        start_server(
            model.uri,
            model_name="other",
            http_port=endpoint.http_port,
            grpc_port=_free_ports(1)[0],
            log_path=tmp_path / "x.log",
        )
    with pytest.raises(ServingError, match=r"serving\.grpc_port=\d+"):
        start_server(
            model.uri,
            model_name="other",
            http_port=_free_ports(1)[0],
            grpc_port=endpoint.grpc_port,
            log_path=tmp_path / "x.log",
        )
    assert time.monotonic() - started < 2
    assert not (tmp_path / "x.log").exists()


def test_stop_server_ends_the_process_and_is_idempotent(endpoint):
    assert _alive(endpoint.pid)
    assert stop_server(endpoint) is True
    assert not _alive(endpoint.pid)
    assert stop_server(endpoint) is False
    assert stop_server(endpoint.pid) is False
    ensure_port_free(endpoint.host, endpoint.http_port, "serving.http_port")  # the port is free again


def test_stop_server_leaves_unrelated_processes_alone():
    other = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        assert stop_server(other.pid) is False
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_tampered_model_exits_non_zero_with_one_clear_line(tampered_uri):
    http_port, grpc_port = _free_ports(2)
    result = subprocess.run(
        [sys.executable, "-m", "kfkit.serving.server", "--model-uri", tampered_uri, "--model-name", "test-mlp",
         "--http_port", str(http_port), "--grpc_port", str(grpc_port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kfkit serve: error: ") and "sha256" in last and "model.safetensors" in last, result.stderr


def test_start_server_reports_an_early_exit_with_the_log(tampered_uri, tmp_path):
    http_port, grpc_port = _free_ports(2)
    log_path = tmp_path / "logs" / "bad.log"
    with pytest.raises(
        ServingError, match=r"(?s)exited with code 1 before it was ready; log .*bad\.log:\n.*sha256"
    ) as caught:
        start_server(tampered_uri, model_name="m", http_port=http_port, grpc_port=grpc_port, log_path=log_path)
    assert "kfkit serve: error:" in str(caught.value)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[0] == "Z")


def _has(tool: str) -> bool:
    return any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(os.pathsep))


@pytest.mark.parametrize("stack", ["sync", "aio"])
def test_sigterm_lets_in_flight_grpc_calls_finish(model, tmp_path, stack):
    """SIGTERM while 16 clients keep calling: every call sent before it is answered OK (never INTERNAL: the
    model unloads only after the gRPC server drained), later ones are refused, and the process exits."""
    import grpc
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    http_port, grpc_port = _free_ports(2)
    started = start_server(model.uri, model_name="test-mlp", http_port=http_port, grpc_port=grpc_port,
                           log_path=tmp_path / "server.log", timeout_s=90, grpc_stack=stack)  # fmt: skip
    request = _infer_request(model.rows)
    calls: list[tuple[float, float, grpc.StatusCode]] = []
    stop = threading.Event()

    def client() -> None:
        with grpc.insecure_channel(started.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                t0 = time.monotonic()
                try:
                    stub.ModelInfer(request, timeout=20)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as e:
                    code = e.code()
                calls.append((t0, time.monotonic(), code))
                if code == grpc.StatusCode.UNAVAILABLE:
                    return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)
        signalled = time.monotonic()
        os.kill(started.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while _alive(started.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(started.pid), "the server did not exit within 30 s of SIGTERM"
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        stop_server(started)
    before = {code for t0, _, code in calls if t0 < signalled}
    assert before == {grpc.StatusCode.OK}, (before, (tmp_path / "server.log").read_text()[-2000:])
    refused = {code for t0, _, code in calls if t0 >= signalled and code != grpc.StatusCode.OK}
    # Calls that reach a stopping server are refused, UNAVAILABLE or (arriving as grpcio shuts down) CANCELLED
    assert refused <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}, refused
    in_flight = [end for t0, end, code in calls if code == grpc.StatusCode.OK and t0 < signalled < end]
    assert in_flight, "no call was in flight at SIGTERM and answered"
    assert sum(code == grpc.StatusCode.OK for _, _, code in calls) > 16
