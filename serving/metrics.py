"""Prometheus metrics of the model server (exposed on /metrics with KServe's own).

Request counts by protocol and status, request latency, rows and requests per forward pass, forward-pass
time, payload-log events (sent, failed, dropped) and the served model's name and version.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["ServerMetrics", "REQUESTS", "LATENCY", "BATCH_ROWS", "BATCH_REQUESTS", "FORWARD", "PAYLOAD_EVENTS"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

REQUESTS = Counter(
    "kfkit_requests_total",
    "Inference requests answered, by protocol (v1, v2, grpc, tfserving-grpc; http: rejected before routing as "
    "malformed HTTP) and status (HTTP status or gRPC code).",
    ["model", "protocol", "status"],
)
LATENCY = Histogram(
    "kfkit_request_duration_seconds",
    "Time from a request's arrival at the handler to its answer, by protocol.",
    ["model", "protocol"],
    buckets=_LATENCY_BUCKETS,
)
BATCH_ROWS = Histogram("kfkit_batch_rows", "Rows scored per forward pass.", ["model"], buckets=_ROW_BUCKETS)
BATCH_REQUESTS = Histogram(
    "kfkit_batch_requests", "Requests merged into one forward pass.", ["model"], buckets=_ROW_BUCKETS
)
FORWARD = Histogram(
    "kfkit_forward_seconds",
    "Time of one forward pass on the worker thread, hand-off included.",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
PAYLOAD_EVENTS = Counter(
    "kfkit_payload_log_events_total",
    "Payload-log CloudEvents by outcome: sent, failed (receiver error or unreachable), dropped (queue full).",
    ["model", "outcome"],
)
MODEL_INFO = Gauge(
    "kfkit_model_info",
    "The model version this server serves (value 1), with its framework and manifest digest.",
    ["model", "version", "framework", "digest"],
)


class ServerMetrics:
    """The metrics of one served model, with label children bound once (a label lookup per request is slow)."""

    def __init__(self, model: str) -> None:
        """Bind the per-model children."""
        self.model = model
        self._requests: dict[tuple[str, str], Counter] = {}
        self._latency = {p: LATENCY.labels(model, p) for p in ("v1", "v2", "grpc", "tfserving-grpc")}
        self._batch_rows = BATCH_ROWS.labels(model)
        self._batch_requests = BATCH_REQUESTS.labels(model)
        self._forward = FORWARD.labels(model)
        self._payload = {o: PAYLOAD_EVENTS.labels(model, o) for o in ("sent", "failed", "dropped")}

    def request(self, protocol: str, status: int | str, seconds: float) -> None:
        """Count one answered request and observe its latency."""
        key = (protocol, str(status))
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = REQUESTS.labels(self.model, protocol, key[1])
        child.inc()
        latency = self._latency.get(protocol)
        if latency is None:
            latency = self._latency[protocol] = LATENCY.labels(self.model, protocol)
        latency.observe(seconds)

    def rejected(self, status: int) -> None:
        """Count one answer to bytes that were not valid HTTP (no latency: no request reached a handler)."""
        REQUESTS.labels(self.model, "http", str(status)).inc()

    def batch(self, rows: int, requests: int, seconds: float) -> None:
        """Observe one forward pass (the batcher's ``on_batch`` hook)."""
        self._batch_rows.observe(rows)
        self._batch_requests.observe(requests)
        self._forward.observe(seconds)

    def payload(self, outcome: str, count: int = 1) -> None:
        """Count payload-log events: ``sent``, ``failed`` or ``dropped``."""
        self._payload[outcome].inc(count)

    def model_info(self, *, version: str, framework: str, digest: str) -> None:
        """Publish the served version as ``kfkit_model_info{...} 1``."""
        MODEL_INFO.labels(self.model, version, framework, digest).set(1)
