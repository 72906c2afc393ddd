"""The TensorFlow Serving PredictionService API: a real SavedModel, called with the standard TF Serving stubs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # tensorflow takes seconds to import, and the tests start a gRPC server

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import (  # noqa: E402 (after the importorskip)
    get_model_metadata_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kfkit.model import SPEC_FILE, ModelSpec, load_scorer  # noqa: E402
from kfkit.serving.tfserving import start_prediction_service  # noqa: E402

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


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tfmodel")
    keras_model = _save_keras_model(folder)
    scorer, spec = load_scorer(folder)
    server = start_prediction_service(scorer, spec, "127.0.0.1", 0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.kfkit_port}")
    rows = np.random.default_rng(0).normal(0, 2, (7, N_FEATURES)).astype(np.float32)
    expected = tf.sigmoid(tf.squeeze(keras_model(rows), -1)).numpy()
    yield SimpleNamespace(
        stub=prediction_service_pb2_grpc.PredictionServiceStub(channel), port=server.kfkit_port, rows=rows,
        expected=expected, folder=folder,
    )  # fmt: skip
    channel.close()
    server.stop(None)


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
    scorer, spec = load_scorer(model.model_dir)
    server = start_prediction_service(scorer, spec, "127.0.0.1", 0, model_name="torch-mlp")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.kfkit_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(_request(model.rows, name="torch-mlp"), timeout=30)
    finally:
        server.stop(None)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["probability"]), model.expected, atol=1e-6)


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


def test_kfkit_server_answers_tf_serving_clients_beside_kserve(publish_random_mlp, free_port, tmp_path):
    """`--tfserving-grpc-port`: the one server process answers both V2 REST and TF Serving's Predict."""
    import httpx

    from kfkit.deploy.local import stop_server

    model = publish_random_mlp("tfserving-server", seed=5, n_rows=4)
    http_port, grpc_port, tf_port = free_port(), free_port(), free_port()
    command = [
        sys.executable, "-m", "kfkit.serving.server", "--model-uri", model.uri, "--model-name", "both",
        "--http_port", str(http_port), "--grpc_port", str(grpc_port), "--tfserving-grpc-port", str(tf_port),
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
    finally:
        if process.poll() is None:
            stop_server(process.pid)
        process.wait(timeout=30)
        log.close()
