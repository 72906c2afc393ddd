"""The one request path every front shares, from a decoded request to the model and back.

A front (:mod:`~kfkit.serving.rest` for V1 and V2 REST, :mod:`~kfkit.serving.grpc_service` for V2 gRPC,
:mod:`~kfkit.serving.tfserving` for TF Serving's gRPC API) reads its wire format with its protocol's
decoder; every decoder ends in this plane's :class:`~kfkit.serving.tensors.TensorChecks`. The batch then
goes through :meth:`DataPlane.score` (the predictor's one :class:`~kfkit.serving.batching.AdaptiveBatcher`
and its one in-memory model), the answer is built by the plane's encoder, and the front counts the request
in the plane's metrics and queues the pair on its payload logger.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kfkit.errors import ServingError
from kfkit.serving.encoding import ResponseEncoder
from kfkit.serving.tensors import TensorChecks

if TYPE_CHECKING:
    from kfkit.serving.metrics import ServerMetrics
    from kfkit.serving.payload_logger import Body, PayloadLogger
    from kfkit.serving.predictor import KfkitPredictor
    from kfkit.serving.tensors import ParsedRequest

__all__ = ["DataPlane"]


class DataPlane:
    """What every front of one served model shares: checks, batcher and model, encoder, metrics, payload log."""

    def __init__(
        self, predictor: KfkitPredictor, *, metrics: ServerMetrics, payload_logger: PayloadLogger | None = None
    ) -> None:
        """Bind the plane to a loaded predictor.

        Args:
            predictor: The loaded model (its batcher runs every forward pass).
            metrics: Request counts and latencies, by front (``protocol``) and status.
            payload_logger: Where request/response pairs go as CloudEvents; None to log nothing.
        """
        if predictor.spec is None:
            raise ServingError(f"model {predictor.name!r} is not loaded; call load() before serving it")
        self.predictor = predictor
        self.model_name = predictor.name
        self.model_version = predictor.model_version
        self.checks = TensorChecks(predictor.spec.feature_names)
        """The tensor checks every protocol decoder ends in."""
        self.encoder = ResponseEncoder(predictor.name, predictor.model_version)
        self.metrics = metrics
        self.payload_logger = payload_logger
        # The predictor's own coroutine, bound once: no extra await layer per request.
        self.score = predictor.score
        """``await score(features)``: probabilities (float32) and labels (int64) for a checked batch."""
        self.observe = metrics.request
        """``observe(protocol, status, seconds)``: count one answered request (called by every front)."""
        # The thread-side entry of the same batcher; the predictor scores only through coroutines.
        self._submit_blocking = predictor.batcher.submit_blocking
        self._threshold = float(predictor.spec.threshold)

    def score_blocking(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``score`` for callers on threads that run no event loop (the thread-pool gRPC server).

        The same batcher and model: concurrent callers share forward passes, run on the caller's thread.

        Returns:
            Probabilities (float32) and labels (int64), as :attr:`score` returns them.
        """
        probabilities = self._submit_blocking(features)
        return probabilities, (probabilities >= self._threshold).astype(np.int64)

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and answering."""
        return self.predictor.ready

    def metadata(self) -> dict[str, Any]:
        """The V2 model metadata document."""
        return self.predictor.metadata()

    def log(self, event_id: str, request: Body, response: Body) -> None:
        """Queue one JSON request/response pair on the payload logger (call only when it is set)."""
        self.payload_logger.log(event_id=event_id, content_type="application/json", request=request, response=response)

    def log_as_v2(self, event_id: str, parsed: ParsedRequest, probabilities: np.ndarray, labels: np.ndarray) -> None:
        """Queue the pair as V2 JSON rebuilt from the batch (for requests that were not JSON: gRPC, binary).

        The bodies are built later, by a sender, off the request path.
        """
        encoder = self.encoder
        self.log(
            event_id,
            lambda: encoder.v2_request_json(parsed),
            lambda: encoder.v2_response_json(parsed, probabilities, labels),
        )
