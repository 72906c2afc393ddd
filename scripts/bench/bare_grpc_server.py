"""The gRPC floors' server: one Python gRPC stack that deserializes each V2 ModelInferRequest and answers a constant.

Run by path (``python -P bare_grpc_server.py STACK PORT BATCH``); prints READY once it listens. Each stack
does the least a V2 server must: parse the request message (``ModelInferRequest.FromString``) and send a
prebuilt ``batch``-row ModelInferResponse, so the figure is what the stack alone costs per call on this
machine (see ``grpc_floor.py``). Stacks:

- ``aio``: grpc.aio, generic handler with protobuf (de)serializers, the default asyncio loop.
- ``aio-uvloop``: the same on uvloop.
- ``aio-raw``: grpc.aio on uvloop, raw-bytes handler (no serializer layer), the response pre-serialized.
- ``sync-N``: the synchronous grpcio server with a ThreadPoolExecutor of N threads, raw-bytes handler;
  ``sync-N-maxM`` with ``maximum_concurrent_rpcs=M`` (calls beyond M are refused RESOURCE_EXHAUSTED).
- ``grpclib``: grpclib (pure-Python HTTP/2 on asyncio, h2) on uvloop.
"""

from __future__ import annotations

import asyncio
import sys

from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
METHOD = f"/{SERVICE}/ModelInfer"


def answer(batch: int) -> pb.ModelInferResponse:
    """The prebuilt response: ``batch`` probabilities."""
    return pb.ModelInferResponse(
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


async def serve_aio(port: int, batch: int, *, raw: bool) -> None:
    """grpc.aio; ``raw``: bytes in and out, the parse done in the handler."""
    import grpc
    from grpc import aio

    response = answer(batch)
    if raw:
        wire = response.SerializeToString()
        parse = pb.ModelInferRequest.FromString

        async def infer_raw(request: bytes, _context: aio.ServicerContext) -> bytes:
            parse(request)
            return wire

        method = grpc.unary_unary_rpc_method_handler(infer_raw)
    else:

        async def infer(_request: pb.ModelInferRequest, _context: aio.ServicerContext) -> pb.ModelInferResponse:
            return response

        method = grpc.unary_unary_rpc_method_handler(
            infer,
            request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString,
        )
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": method}),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


def serve_sync(port: int, batch: int, threads: int, max_rpcs: int | None) -> None:
    """The synchronous grpcio server, ``threads`` handler threads, raw bytes in and out."""
    from concurrent.futures import ThreadPoolExecutor

    import grpc

    wire = answer(batch).SerializeToString()
    parse = pb.ModelInferRequest.FromString

    def infer(request: bytes, _context: grpc.ServicerContext) -> bytes:
        parse(request)
        return wire

    server = grpc.server(ThreadPoolExecutor(max_workers=threads), maximum_concurrent_rpcs=max_rpcs)
    handler = grpc.method_handlers_generic_handler(SERVICE, {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("READY", flush=True)
    server.wait_for_termination()


async def serve_grpclib(port: int, batch: int) -> None:
    """grpclib with its protobuf codec."""
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server, Stream

    response = answer(batch)

    class Service:
        async def infer(self, stream: Stream) -> None:
            await stream.recv_message()
            await stream.send_message(response)

        def __mapping__(self) -> dict[str, Handler]:
            return {METHOD: Handler(self.infer, Cardinality.UNARY_UNARY, pb.ModelInferRequest, pb.ModelInferResponse)}

    server = Server([Service()])
    await server.start("127.0.0.1", port)
    print("READY", flush=True)
    await server.wait_closed()


def main(stack: str, port: int, batch: int) -> None:
    """Serve ``stack`` on 127.0.0.1:``port`` until killed."""
    if stack.startswith("sync-"):
        threads, _, limit = stack.removeprefix("sync-").partition("-max")
        serve_sync(port, batch, int(threads), int(limit) if limit else None)
        return
    if stack == "aio":
        asyncio.run(serve_aio(port, batch, raw=False))
        return
    import uvloop

    coroutine = {
        "aio-uvloop": lambda: serve_aio(port, batch, raw=False),
        "aio-raw": lambda: serve_aio(port, batch, raw=True),
        "grpclib": lambda: serve_grpclib(port, batch),
    }[stack]
    uvloop.run(coroutine())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
