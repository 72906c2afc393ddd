"""The gRPC floor's server: bare grpc.aio, deserializes each V2 ModelInferRequest, answers a prebuilt response.

Run by path (``python -P bare_grpc_server.py PORT BATCH``); prints READY once it listens. It measures what
grpcio alone costs per call on this machine; see ``grpc_floor.py``.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from grpc import aio
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb


async def serve(port: int, batch: int) -> None:
    """Answer every ModelInfer call on 127.0.0.1:``port`` with the same ``batch``-row response."""
    answer = pb.ModelInferResponse(
        model_name="bench-mlp",
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name="probability",
                datatype="FP32",
                shape=[batch],
                contents=pb.InferTensorContents(fp32_contents=[0.5] * batch),
            )
        ],
    )

    async def infer(_request: pb.ModelInferRequest, _context: aio.ServicerContext) -> pb.ModelInferResponse:
        return answer

    handler = grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
