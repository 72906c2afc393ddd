"""Request bytes, encoded once per batch size: the same bytes go to every server."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .fixtures import MODEL_NAME

__all__ = ["Payloads", "build_payloads", "v2_body", "v1_body", "grpc_request"]


def v2_body(rows: Any) -> bytes:
    """Open Inference Protocol (V2) REST body: one FP32 tensor ``features`` of shape [N, 30]."""
    flat = [float(f"{v:.4f}") for v in rows.reshape(-1).tolist()]
    body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": flat}]}
    return json.dumps(body, separators=(",", ":")).encode()


def v1_body(rows: Any) -> bytes:
    """KServe V1 REST body: ``instances``, one list of numbers per row."""
    instances = [[float(f"{v:.4f}") for v in row] for row in rows.tolist()]
    return json.dumps({"instances": instances}, separators=(",", ":")).encode()


def grpc_request(rows: Any) -> bytes:
    """A serialized V2 ``ModelInferRequest`` (fp32_contents, as the usual clients send)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    return pb.ModelInferRequest(model_name=MODEL_NAME, inputs=[tensor]).SerializeToString()


@dataclass
class Payloads:
    """Request bytes per protocol, keyed by rows per request."""

    v2_rest: dict[int, bytes]
    v1_rest: dict[int, bytes]
    grpc: dict[int, bytes]

    def sizes(self) -> dict[str, int]:
        """Bytes per payload, ``<kind>_b<batch>``, for the results."""
        return {
            f"{kind}_b{b}": len(getattr(self, kind)[b]) for kind in ("v2_rest", "v1_rest", "grpc") for b in self.v2_rest
        }


def build_payloads(rows: Any, batches: Iterable[int]) -> Payloads:
    """Every protocol's request for the first ``b`` of ``rows``, for each ``b`` in ``batches``."""
    batches = list(batches)
    return Payloads(
        v2_rest={b: v2_body(rows[:b]) for b in batches},
        v1_rest={b: v1_body(rows[:b]) for b in batches},
        grpc={b: grpc_request(rows[:b]) for b in batches},
    )
