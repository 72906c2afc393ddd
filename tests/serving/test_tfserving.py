"""The TensorFlow Serving PredictionService API: a real SavedModel, called with the standard TF Serving stubs.

The front runs as the server runs it: over the model's data plane (the same checks, batcher and model as
the V2 fronts), on kfkit's gRPC server class; here on an event loop of its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # tensorflow takes seconds to import, and the tests start a gRPC server

import tensorflow as tf  # noqa: E402  (in the main environment: a missing one fails)
from tensorflow_serving.apis import (  # noqa: E402 (after the pytestmark)
    classification_pb2,
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kfkit.model import SPEC_FILE, ModelSpec  # noqa: E402
from kfkit.serving.dataplane import DataPlane  # noqa: E402
from kfkit.serving.metrics import ServerMetrics  # noqa: E402
from kfkit.serving.predictor import KfkitPredictor  # noqa: E402
from kfkit.serving.tfserving import tfserving_server  # noqa: E402

N_FEATURES = 30
NAME = "tf-mlp"


def _save_keras_model(folder: Path) -> tf.keras.Model:
    """A tiny Keras MLP saved as kfkit's TF layout: saved_model/ (serving_default: features -> probability)."""
    tf.keras.utils.set_random_seed(3)
    model = tf.keras.Sequential(
        [tf.keras.Input((N_FEATURES,)), tf.keras.layers.Dense(8, activation="relu"), tf.keras.layers.Dense(1)]
    )

    class Export(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, N_FEATURES], tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict:
            return {"probability": tf.sigmoid(tf.squeeze(self.model(features), -1))}

    export = Export()
    tf.saved_model.save(export, str(folder / "saved_model"), signatures={"serving_default": export.serve})
    spec = ModelSpec(
        name=NAME, feature_names=[f"x{i:02d}" for i in range(N_FEATURES)], hidden_dims=[8], framework="tensorflow"
    )
    (folder / SPEC_FILE).write_text(json.dumps(asdict(spec)))
    return model


@contextlib.contextmanager
def _serving(model_dir: Path, name: str, stack: str = "sync"):
    """The TF Serving front for one loaded model, on port 0 and an event loop in a thread; yields the port."""
    predictor = KfkitPredictor(name, model_dir, max_batch_size=16)
    predictor.load()
    server = tfserving_server(DataPlane(predictor, metrics=ServerMetrics(name)), "127.0.0.1", 0,
                              max_message_bytes=1 << 22, grace_period=1, stack=stack)  # fmt: skip
    stopping = threading.Event()

    async def run() -> None:
        serving = asyncio.ensure_future(server.start())
        # Polled, not signalled: a wake-up from another thread does not reach a loop polling gRPC's sockets.
        while not stopping.is_set() and not serving.done():
            await asyncio.sleep(0.05)
        await server.stop()
        await serving

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    for _ in range(300):
        if server.bound_port or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.bound_port, "the TF Serving front did not start"
    try:
        yield server.bound_port
    finally:
        stopping.set()
        thread.join(30)
        predictor.stop()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfmodel")
    keras_model = _save_keras_model(folder)
    with _serving(folder, NAME) as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        rows = np.random.default_rng(0).normal(0, 2, (7, N_FEATURES)).astype(np.float32)
        expected = tf.sigmoid(tf.squeeze(keras_model(rows), -1)).numpy()
        yield SimpleNamespace(
            stub=prediction_service_pb2_grpc.PredictionServiceStub(channel), port=port, rows=rows,
            expected=expected, folder=folder,
        )  # fmt: skip


def _request(rows, *, name: str = NAME, dtype=tf.float32, signature: str = "serving_default"):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs["features"].CopyFrom(tf.make_tensor_proto(rows, dtype=dtype))
    return request


def test_predict_equals_the_savedmodel(service):
    response = service.stub.Predict(_request(service.rows), timeout=30)
    probability = tf.make_ndarray(response.outputs["probability"])
    label = tf.make_ndarray(response.outputs["label"])
    assert probability.dtype == np.float32 and probability.shape == (7,)
    np.testing.assert_allclose(probability, service.expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(label, (service.expected >= 0.5).astype(np.int64))
    assert response.model_spec.name == NAME and response.model_spec.signature_name == "serving_default"


def test_output_filter_and_float_val_encoding(service):
    request = predict_pb2.PredictRequest(output_filter=["probability"])
    request.model_spec.name = NAME
    tensor = request.inputs["features"]  # float_val instead of tensor_content, as some clients send it
    tensor.dtype = tf.float32.as_datatype_enum
    tensor.tensor_shape.dim.add(size=2)
    tensor.tensor_shape.dim.add(size=N_FEATURES)
    tensor.float_val.extend(service.rows[:2].reshape(-1).tolist())
    response = service.stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["probability"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), service.expected[:2], atol=1e-6)


@pytest.mark.parametrize(
    ("request_factory", "code", "fragment"),
    [
        (lambda rows: _request(rows, name="other"), grpc.StatusCode.NOT_FOUND, "'other'"),
        (lambda rows: _request(rows, dtype=tf.float64), grpc.StatusCode.INVALID_ARGUMENT, "DT_DOUBLE"),
        (lambda rows: _request(rows[:, :29]), grpc.StatusCode.INVALID_ARGUMENT, "shape [7, 29]"),
        (lambda rows: _request(rows[0]), grpc.StatusCode.INVALID_ARGUMENT, "shape [30]"),
        (lambda rows: _request(np.where(rows > 3, np.nan, rows)), grpc.StatusCode.INVALID_ARGUMENT, "NaN"),
        (lambda rows: _request(rows, signature="classify"), grpc.StatusCode.INVALID_ARGUMENT, "'classify'"),
    ],
    ids=["unknown-model", "float64", "narrow", "1-d", "nan", "signature"],
)
def test_bad_requests_get_the_tf_serving_status(service, request_factory, code, fragment):
    with pytest.raises(grpc.RpcError) as caught:
        service.stub.Predict(request_factory(service.rows), timeout=30)
    assert caught.value.code() == code
    assert fragment in caught.value.details()
    # the service keeps answering afterwards
    assert service.stub.Predict(_request(service.rows[:1]), timeout=30).outputs["probability"].tensor_shape.dim


def test_model_metadata_describes_the_signature(service):
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = NAME
    response = service.stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert [d.size for d in signature.inputs["features"].tensor_shape.dim] == [-1, N_FEATURES]
    assert signature.inputs["features"].dtype == tf.float32.as_datatype_enum
    assert set(signature.outputs) == {"probability", "label"}


def test_pytorch_model_through_the_same_api(publish_random_mlp):
    model = publish_random_mlp("tfserving-torch", seed=4, n_rows=5)
    with _serving(model.model_dir, "torch-mlp") as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_request(model.rows, name="torch-mlp"), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), model.expected, atol=1e-6)


def test_the_same_api_on_the_aio_stack(service):
    """serving.grpc_stack=aio: the same methods, answers and status codes on grpc.aio."""
    with _serving(service.folder, NAME, stack="aio") as port, grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(_request(service.rows), timeout=30)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Predict(_request(service.rows, name="other"), timeout=30)
        with pytest.raises(grpc.RpcError) as unimplemented:
            stub.Classify(classification_pb2.ClassificationRequest(), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), service.expected, atol=1e-6)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND and "'other'" in caught.value.details()
    assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_client_example_script(service, repo):
    rows = json.dumps(service.rows[:2].tolist())
    command = [sys.executable, str(repo / "scripts" / "tfserving_client.py"), "--target", f"127.0.0.1:{service.port}"]
    result = subprocess.run(
        [*command, "--model-name", NAME, "--rows", rows], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(answer["probability"], service.expected[:2], atol=1e-6)
    assert answer["label"] == (service.expected[:2] >= 0.5).astype(int).tolist()
    missing = subprocess.run([*command, "--model-name", "nope", "--random", "1"], capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_kfkit_server_answers_tf_serving_clients_beside_kserve(
    publish_random_mlp, free_port, tmp_path, payload_receiver
):
    """`--tfserving-grpc-port`: the one server process answers both V2 REST and TF Serving's Predict, and both
    take the same path: one batcher (its rows counted once), one set of metrics, one payload log."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from kfkit.deploy.local import stop_server

    model = publish_random_mlp("tfserving-server", seed=5, n_rows=4)
    http_port, grpc_port, tf_port = free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "kfkit.serving.server", "--model-uri", model.uri, "--model-name", "both",
        "--http_port", str(http_port), "--grpc_port", str(grpc_port), "--tfserving-grpc-port", str(tf_port),
        "--payload-log-url", payload_receiver.url,
    ]  # fmt: skip
    log = open(tmp_path / "server.log", "wb")  # closed below, after the server stops
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.1)
        with grpc.insecure_channel(f"127.0.0.1:{tf_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(_request(model.rows, name="both"), timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), model.expected, atol=1e-6)
        v2 = httpx.post(
            f"http://127.0.0.1:{http_port}/v2/models/both/infer",
            json={"inputs": [{"name": "features", "shape": list(model.rows.shape), "datatype": "FP32",
                              "data": model.rows.ravel().tolist()}]},
            timeout=30,
        )  # fmt: skip
        assert v2.status_code == 200, v2.text
        np.testing.assert_allclose(v2.json()["outputs"][0]["data"], model.expected, atol=1e-6)

        with grpc.insecure_channel(f"127.0.0.1:{tf_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(_request(model.rows, name="other"), timeout=30)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        text = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10).text
        samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.labels.get("model") == "both"
        }

        def value(name: str, **labels: str) -> float:
            return samples.get((name, frozenset({"model": "both", **labels}.items())), 0.0)

        assert value("kfkit_requests_total", protocol="tfserving-grpc", status="OK") == 1
        assert value("kfkit_requests_total", protocol="tfserving-grpc", status="NOT_FOUND") == 1
        assert value("kfkit_request_duration_seconds_count", protocol="tfserving-grpc") == 2
        assert value("kfkit_batch_rows_sum") == 2 * len(model.rows)  # the TF and the V2 request, one batcher

        def ours(events):
            return [(h, b) for h, b in events if h.get("ce-inferenceservicename") == "both"]

        events = ours(payload_receiver.wait_for(lambda events: len(ours(events)) >= 4))
        assert len(events) == 4, events  # a request/response pair for each scored request
        requests = [json.loads(b) for h, b in events if h["ce-type"].endswith(".request")]
        for request in requests:
            assert request["inputs"][0]["shape"] == list(model.rows.shape)
            np.testing.assert_allclose(
                np.reshape(request["inputs"][0]["data"], model.rows.shape), model.rows, rtol=1e-6
            )
    finally:
        if process.poll() is None:
            stop_server(process.pid)
        process.wait(timeout=30)
        log.close()
