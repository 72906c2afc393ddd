#!/usr/bin/env python3
"""Call a kfkit model through the TensorFlow Serving gRPC API, exactly as an existing TF Serving client does.

Usage:
  python scripts/tfserving_client.py --target 127.0.0.1:8500 --model-name breast-cancer-mlp --rows '[[13.8, 17.2, ...]]'
  python scripts/tfserving_client.py --target 127.0.0.1:8500 --model-name breast-cancer-mlp --random 3 --features 30
  python scripts/tfserving_client.py --target 127.0.0.1:8500 --model-name breast-cancer-mlp --metadata

Sends a PredictRequest (signature ``serving_default``, input ``features`` = float32 [N, n_features], built with
``tf.make_tensor_proto``) to ``tensorflow.serving.PredictionService/Predict`` and prints the ``probability``
and ``label`` outputs as JSON. Only tensorflow and tensorflow-serving-api are needed, no kfkit.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--target", default="127.0.0.1:8500", help="host:port of the TF Serving API (default %(default)s)"
    )
    parser.add_argument("--model-name", required=True, help="model_spec.name: the served model's name")
    parser.add_argument(
        "--signature", default="serving_default", help="model_spec.signature_name (default %(default)s)"
    )
    rows = parser.add_mutually_exclusive_group()
    rows.add_argument("--rows", help="JSON list of rows, each a list of n_features numbers")
    rows.add_argument("--random", type=int, metavar="N", help="send N rows of standard-normal features")
    parser.add_argument("--features", type=int, default=30, help="row width for --random (default %(default)s)")
    parser.add_argument(
        "--metadata", action="store_true", help="print the model's signature (GetModelMetadata) instead"
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Send one request and print the answer as JSON."""
    args = build_parser().parse_args(argv)
    if not args.metadata and args.rows is None and args.random is None:
        build_parser().error("give --rows, --random N or --metadata")

    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    with grpc.insecure_channel(args.target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            if args.metadata:
                request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
                request.model_spec.name = args.model_name
                response = stub.GetModelMetadata(request, timeout=args.timeout)
                signatures = get_model_metadata_pb2.SignatureDefMap()
                response.metadata["signature_def"].Unpack(signatures)
                print(signatures)
                return 0
            if args.rows is not None:
                rows = np.asarray(json.loads(args.rows), dtype=np.float32)
            else:
                rows = np.random.default_rng(0).standard_normal((args.random, args.features)).astype(np.float32)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = args.model_name
            request.model_spec.signature_name = args.signature
            request.inputs["features"].CopyFrom(tf.make_tensor_proto(rows, dtype=tf.float32))
            response = stub.Predict(request, timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"tfserving_client: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    outputs = {name: tf.make_ndarray(tensor).tolist() for name, tensor in response.outputs.items()}
    print(json.dumps({"model": response.model_spec.name, "version": response.model_spec.version.value, **outputs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
