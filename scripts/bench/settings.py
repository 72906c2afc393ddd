"""What ``kfkit bench serve`` measures: its settings, the three presets, and the servers it can compare."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BenchSettings", "PRESETS", "MLSERVER_VARIANTS", "SWEEP_CASES", "DEFAULT_MLSERVER_VENV"]

DEFAULT_MLSERVER_VENV = ".venv-mlserver"
MLSERVER_VARIANTS = ("mlserver", "mlserver-batching", "mlserver-default")
"""MLServer settings the bench can run; each ratio is taken against the best of those that ran."""

# Sweep cases, in the order they alternate: kfkit and MLServer interleaved protocol by protocol.
SWEEP_CASES = (
    ("kfkit", "v2-rest"),
    ("mlserver", "v2-rest"),
    ("kfkit", "v2-grpc"),
    ("kfkit-aio", "v2-grpc"),
    ("mlserver", "v2-grpc"),
    ("kfkit", "v1-rest"),
)


@dataclass
class BenchSettings:
    """What to measure and for how long."""

    mode: str = "short"
    """Preset this started from (``quick``, ``short``, ``full``); informational."""
    concurrencies: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    """Closed-loop concurrency sweep (requests in flight)."""
    batches: list[int] = field(default_factory=lambda: [1, 64])
    """Rows per request."""
    duration_s: float = 5.0
    """Length of one measured run."""
    warmup_s: float = 1.0
    """Unmeasured load on each server and protocol before the sweep."""
    repeats: int = 3
    """Runs per configuration; medians are reported."""
    servers: list[str] = field(default_factory=lambda: ["kfkit", "mlserver", "mlserver-batching"])
    """Servers to compare: ``kfkit``, ``mlserver`` (tuned: parallel_workers=0, metrics off), ``mlserver-batching``
    (tuned plus MLServer's adaptive batching, kfkit's limits), ``mlserver-default``, ``kfkit-aio`` (kfkit with
    ``serving.grpc_stack=aio``, gRPC cells only). Ratios use the best MLServer setting of each cell."""
    protocols: list[str] = field(default_factory=lambda: ["v2-rest", "v2-grpc", "v1-rest"])
    """Protocols to sweep (V1 REST only exists on kfkit)."""
    open_loop: bool = True
    """Measure latency at ``open_loop_fraction`` of each server's peak (batch 1) with an open-loop run."""
    open_loop_fraction: float = 0.7
    open_loop_duration_s: float = 10.0
    batching: bool = True
    """Compare kfkit with adaptive batching (its default) against max batch size 1."""
    batching_concurrency: int = 64
    batching_frameworks: list[str] = field(default_factory=lambda: ["pytorch", "tensorflow"])
    """Models for the batching comparison: the PyTorch MLP, and its TensorFlow SavedModel twin (same weights)."""
    forward: bool = True
    """Time the raw in-process forward pass (and JSON decode+forward+encode) on the server core."""
    server_cpu: int = 0
    """Core the servers and the forward-pass timing run on."""
    client_cpu: int = 1
    """Core the load generator runs on."""
    use_wrk: bool = True
    """Closed-loop REST load with wrk when it is installed (else, and for open loop, the asyncio client)."""
    mlserver_venv: str = DEFAULT_MLSERVER_VENV
    """Virtual environment with mlserver==1.7.1 (``make .venv-mlserver/.installed``)."""
    kfkit_args: list[str] = field(default_factory=list)
    """Extra arguments for ``python -m kfkit.serving.server``."""
    capacity_slos_ms: list[float] = field(default_factory=list)
    """``--capacity``: p99 bounds (ms) to size one replica at; empty = kfkit's ``deploy.slo_p99_ms``."""
    capacity_start_rate: float = 100.0
    """``--capacity``: first offered rate (req/s) of the search."""
    capacity_max_rate: float = 200_000.0
    """``--capacity``: the search stops stepping up here."""


PRESETS: dict[str, BenchSettings] = {
    "quick": BenchSettings(
        mode="quick", concurrencies=[4], batches=[1], duration_s=1.0, warmup_s=0.3, repeats=1,
        protocols=["v2-rest", "v2-grpc"], open_loop_duration_s=1.0, batching_concurrency=16,
        batching_frameworks=["pytorch"], servers=["kfkit", "mlserver"],
    ),
    "short": BenchSettings(
        mode="short", concurrencies=[1, 16, 64], duration_s=3.0, repeats=3, open_loop_duration_s=5.0,
    ),
    "full": BenchSettings(mode="full", concurrencies=[1, 4, 16, 64], duration_s=5.0, repeats=3),
}  # fmt: skip
"""``--quick`` (a test: seconds), ``short`` (a few minutes) and ``full`` (about twenty minutes)."""
