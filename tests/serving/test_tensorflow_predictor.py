"""A TensorFlow SavedModel served like a PyTorch one: in-process and over V1, V2 REST and V2 gRPC."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from types import SimpleNamespace

import grpc
import httpx
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # tensorflow takes seconds to import; a server starts

import tensorflow as tf  # noqa: E402  (in the main environment: a missing one fails)
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb  # noqa: E402 (after the pytestmark)
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc  # noqa: E402

from kfkit.deploy.local import start_server, stop_server  # noqa: E402
from kfkit.model import SAVED_MODEL_DIR, SPEC_FILE, ModelSpec  # noqa: E402
from kfkit.registry import publish_folder, resolve  # noqa: E402
from kfkit.serving.predictor import KfkitPredictor  # noqa: E402

N = 30
THRESHOLD = 0.45


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


@pytest.fixture(scope="module")
def tf_model(tmp_path_factory) -> SimpleNamespace:
    """A one-hidden-layer TF model in kfkit's layout (saved_model/ + model.json), published; offline scores."""
    rng = np.random.default_rng(7)
    w1, b1 = rng.normal(0, 0.3, (N, 8)).astype(np.float32), rng.normal(0, 0.1, 8).astype(np.float32)
    w2 = rng.normal(0, 0.5, 8).astype(np.float32)
    rows = rng.normal(0, 2, (9, N)).astype(np.float32)
    hidden = np.maximum(rows @ w1 + b1, 0)
    b2 = np.float32(np.log(THRESHOLD / (1 - THRESHOLD)) - np.median(hidden @ w2))  # labels split around the median

    class Export(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1, self.b1 = tf.Variable(w1), tf.Variable(b1)
            self.w2, self.b2 = tf.Variable(w2), tf.Variable(b2)

        @tf.function(input_signature=[tf.TensorSpec([None, N], tf.float32, name="features")])
        def serve(self, features: tf.Tensor) -> dict:
            hidden = tf.nn.relu(tf.matmul(features, self.w1) + self.b1)
            return {"probability": tf.sigmoid(tf.linalg.matvec(hidden, self.w2) + self.b2)}

    root = tmp_path_factory.mktemp("tf-predictor")
    folder = root / "model"
    export = Export()
    tf.saved_model.save(export, str(folder / SAVED_MODEL_DIR), signatures={"serving_default": export.serve})
    spec = ModelSpec(
        name="tf-mlp", feature_names=[f"x{i:02d}" for i in range(N)], hidden_dims=[8], framework="tensorflow",
        threshold=THRESHOLD,
    )  # fmt: skip
    (folder / SPEC_FILE).write_text(json.dumps(asdict(spec)))
    version = publish_folder(folder, registry_uri=f"file://{root}/reg", name="tf-mlp")
    expected = _sigmoid(hidden @ w2 + b2).astype(np.float32)
    assert {int(p >= THRESHOLD) for p in expected} == {0, 1}, "pick rows so both labels occur"
    return SimpleNamespace(uri=version.uri, rows=rows, expected=expected, root=root)


def test_predictor_scores_a_savedmodel_like_offline(tf_model):
    predictor = KfkitPredictor("tf-mlp", resolve(tf_model.uri), max_batch_size=8)
    assert predictor.load() and predictor.framework == "tensorflow"
    assert predictor.get_input_types() == [{"name": "features", "datatype": "FP32", "shape": [-1, N]}]

    async def run():
        return await asyncio.gather(*(predictor.score(tf_model.rows[i : i + 1]) for i in range(len(tf_model.rows))))

    results = asyncio.run(run())
    probabilities = np.concatenate([p for p, _ in results])
    np.testing.assert_allclose(probabilities, tf_model.expected, rtol=0, atol=1e-6)
    labels = np.concatenate([y for _, y in results])
    np.testing.assert_array_equal(labels, (tf_model.expected >= THRESHOLD).astype(np.int64))
    predictor.stop()


def test_savedmodel_over_v1_v2_and_grpc(tf_model, free_port):
    endpoint = start_server(
        tf_model.uri, model_name="tf-mlp", http_port=free_port(), grpc_port=free_port(),
        log_path=tf_model.root / "server.log", timeout_s=180,
    )  # fmt: skip
    try:
        rows, expected = tf_model.rows, tf_model.expected
        with httpx.Client(timeout=30, trust_env=False) as client:
            v1 = client.post(endpoint.v1_url, json={"instances": rows.tolist()})
            v2 = client.post(endpoint.v2_url, json={"inputs": [{"name": "features", "shape": [9, N], "datatype": "FP32",
                                                                "data": rows.ravel().tolist()}]})  # fmt: skip
            metadata = client.get(f"{endpoint.base_url}/v2/models/tf-mlp").json()
        assert v1.status_code == 200 and v2.status_code == 200, (v1.text, v2.text)
        np.testing.assert_allclose([p["probability"] for p in v1.json()["predictions"]], expected, rtol=0, atol=1e-6)
        outputs = {o["name"]: o for o in v2.json()["outputs"]}
        np.testing.assert_allclose(outputs["probability"]["data"], expected, rtol=0, atol=1e-6)
        assert outputs["label"]["data"] == (expected >= THRESHOLD).astype(int).tolist()
        assert metadata["platform"] == "tensorflow"
        tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[9, N])
        message = pb.ModelInferRequest(model_name="tf-mlp", inputs=[tensor], raw_input_contents=[rows.tobytes()])
        with grpc.insecure_channel(endpoint.grpc_target, options=[("grpc.enable_http_proxy", 0)]) as channel:
            response = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=30)
        np.testing.assert_allclose(np.frombuffer(response.raw_output_contents[0], "<f4"), expected, rtol=0, atol=1e-6)
    finally:
        stop_server(endpoint)
