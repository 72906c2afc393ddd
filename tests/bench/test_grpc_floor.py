"""The gRPC floors: every stack's bare server answers a real V2 call, and a tiny floor run prints its table."""

from __future__ import annotations

import pytest

from scripts.bench import grpc_floor
from scripts.bench.grpc_floor import STACKS
from scripts.bench.servers import start_bare_grpc

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stack", STACKS)
def test_every_floor_answers_a_v2_call(stack, free_port):
    import grpc
    import numpy as np
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    port = free_port()
    process = start_bare_grpc(port, 3, None, stack=stack)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.enable_http_proxy", 0)]) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[3, 30])
            tensor.contents.fp32_contents.extend(np.zeros(90).tolist())
            reply = pb.ModelInferResponse.FromString(call(pb.ModelInferRequest(inputs=[tensor]).SerializeToString()))
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert list(reply.outputs[0].shape) == [3] and list(reply.outputs[0].contents.fp32_contents) == [0.5] * 3


def test_a_tiny_floor_run_prints_every_server(capsys):
    args = ["--batches", "1", "--duration", "0.3", "--repeats", "1", "--stacks", "aio,sync-4"]
    assert grpc_floor.main([*args, "--kfkit-stacks", "sync"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| floor:") or line.startswith("| kfkit")]
    assert [row.split(" | ")[0] for row in rows] == ["| floor: aio", "| floor: sync-4", "| kfkit (sync)"], out
    for row in rows:
        rate = float(row.split(" | ")[2].replace(",", ""))
        assert rate > 0, row


def test_unknown_stacks_are_refused_by_name(capsys):
    assert grpc_floor.main(["--stacks", "aio,tornado"]) == 2
    assert "['tornado']" in capsys.readouterr().err
