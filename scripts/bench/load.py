"""Load generators for ``kfkit bench serve``: a lean asyncio HTTP/1.1 client and a grpc.aio one (wrk: ``.wrk``).

Each one sends the same pre-encoded request bytes over and over and returns a :class:`LoadResult`;
closed-loop runs keep ``concurrency`` requests in flight, open-loop runs send at a fixed rate and time
each request from when it was due, so a slow server cannot hide its queueing (no coordinated omission).
The client's own CPU time is recorded, so a run where the client, not the server, was the bottleneck
shows it.
"""

from __future__ import annotations

import asyncio
import gc
import resource
import time
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "LoadResult",
    "HttpTarget",
    "run_http_closed",
    "run_http_open",
    "run_grpc_closed",
    "run_grpc_open",
    "GRPC_INFER_METHOD",
]

GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
"""Open Inference Protocol (V2) gRPC infer method; kfkit (KServe) and MLServer serve the same one."""


@dataclass
class LoadResult:
    """What one load run measured."""

    tool: str
    """Load generator: ``wrk``, ``asyncio-http`` or ``grpc-aio``."""
    mode: str
    """``closed`` (fixed concurrency) or ``open`` (fixed arrival rate)."""
    concurrency: int
    """Requests kept in flight (closed loop) or the connection/call cap (open loop)."""
    requests: int
    """Responses received (successful or not)."""
    errors: int
    """Responses that were not a success, plus failed connections and timeouts."""
    duration_s: float
    """Wall time of the measured window."""
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    client_cpu_s: float = 0.0
    """CPU seconds the load generator used (user + system)."""
    target_rate: float | None = None
    """Open loop: requests per second asked for."""
    notes: list[str] = field(default_factory=list)

    @property
    def req_per_s(self) -> float:
        """Successful responses per second."""
        return (self.requests - self.errors) / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def client_cpu_share(self) -> float:
        """Client CPU time over wall time (near 1.0: the client may have been the bottleneck)."""
        return self.client_cpu_s / self.duration_s if self.duration_s > 0 else 0.0

    def to_dict(self) -> dict:
        """JSON-ready form, with the derived rates."""
        return {**asdict(self), "req_per_s": self.req_per_s, "client_cpu_share": self.client_cpu_share}


@dataclass(frozen=True)
class HttpTarget:
    """One REST endpoint and the exact request bytes to POST to it."""

    host: str
    port: int
    path: str
    body: bytes

    def request_bytes(self) -> bytes:
        """The full HTTP/1.1 request (keep-alive), encoded once and reused for every call."""
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode() + self.body

    @property
    def url(self) -> str:
        """``http://host:port/path``."""
        return f"http://{self.host}:{self.port}{self.path}"


def _percentiles(latencies_s: list[float]) -> dict[str, float]:
    import numpy as np

    if not latencies_s:
        return {"p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0, "max_ms": 0.0}
    ms = np.asarray(latencies_s) * 1000.0
    p50, p95, p99 = np.percentile(ms, [50, 95, 99]).tolist()
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def _cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------- asyncio HTTP/1.1


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection that sends fixed bytes and reads one response at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> _HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def call(self, request: bytes) -> int:
        """Send ``request``, read the whole response, return its status code."""
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        start = lower.find(b"content-length:")
        if start >= 0:
            end = lower.find(b"\r\n", start)
            await self.reader.readexactly(int(lower[start + 15 : end]))
        elif b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status

    def close(self) -> None:
        self.writer.close()


def _run_async(coro: Any) -> Any:
    """Run a load coroutine on uvloop (asyncio if missing) with the garbage collector paused.

    The client keeps every in-flight task and every latency until the run ends; with the collector on, its
    full passes over those objects stalled the client for tens of milliseconds and showed up as the
    server's tail latency (REST open loop at 5,600 req/s: p99 11.8-18.9 ms with it, 2.5 ms without).
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            import uvloop  # a faster loop keeps the client off the critical path
        except ImportError:
            return asyncio.run(coro)
        return uvloop.run(coro)
    finally:
        if gc_was_enabled:
            gc.enable()
        gc.collect()


def run_http_closed(target: HttpTarget, *, concurrency: int, duration_s: float) -> LoadResult:
    """Closed-loop REST load from this process: ``concurrency`` connections, one request in flight each."""
    return _run_async(_http_closed(target, concurrency, duration_s))


async def _http_closed(target: HttpTarget, concurrency: int, duration_s: float) -> LoadResult:
    request = target.request_bytes()
    latencies: list[float] = []
    errors = 0
    connections = [await _HttpConnection.open(target.host, target.port) for _ in range(concurrency)]
    cpu0, start = _cpu_now(), time.perf_counter()
    deadline = start + duration_s

    async def worker(connection: _HttpConnection) -> None:
        nonlocal errors
        clock = time.perf_counter
        while (t0 := clock()) < deadline:
            try:
                status = await connection.call(request)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                errors += 1
                latencies.append(clock() - t0)
                connection.close()
                connection = await _HttpConnection.open(target.host, target.port)
                continue
            latencies.append(clock() - t0)
            if status >= 300:
                errors += 1

    await asyncio.gather(*(worker(c) for c in connections))
    elapsed, cpu = time.perf_counter() - start, _cpu_now() - cpu0
    for connection in connections:
        connection.close()
    return LoadResult(
        tool="asyncio-http", mode="closed", concurrency=concurrency, requests=len(latencies), errors=errors,
        duration_s=elapsed, client_cpu_s=cpu, **_percentiles(latencies),
    )  # fmt: skip


def run_http_open(target: HttpTarget, *, rate: float, duration_s: float, max_in_flight: int = 64) -> LoadResult:
    """Open-loop REST load: one request every ``1/rate`` s, each timed from when it was due.

    Args:
        target: Endpoint and body.
        rate: Requests per second to send.
        duration_s: Length of the run.
        max_in_flight: Connections in the pool; a request waits for a free one (and that wait counts).
    """
    return _run_async(_http_open(target, rate, duration_s, max_in_flight))


async def _http_open(target: HttpTarget, rate: float, duration_s: float, max_in_flight: int) -> LoadResult:
    request = target.request_bytes()
    pool: asyncio.Queue[_HttpConnection] = asyncio.Queue()
    for _ in range(max_in_flight):
        pool.put_nowait(await _HttpConnection.open(target.host, target.port))

    async def one(connection_factory: asyncio.Queue[_HttpConnection]) -> tuple[bool, _HttpConnection | None]:
        connection = await connection_factory.get()
        try:
            status = await connection.call(request)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            connection.close()
            connection = await _HttpConnection.open(target.host, target.port)
            return False, connection
        return status < 300, connection

    async def send(due: float) -> tuple[float, bool]:
        ok, connection = await one(pool)
        pool.put_nowait(connection)
        return time.perf_counter() - due, ok

    return await _open_loop(send, rate, duration_s, max_in_flight, tool="asyncio-http", cleanup=pool)


async def _open_loop(
    send: Any, rate: float, duration_s: float, cap: int, *, tool: str, cleanup: Any = None
) -> LoadResult:
    """Fire ``send(due)`` at a fixed rate; collect (latency from due time, ok) pairs."""
    n = max(1, int(rate * duration_s))
    interval = 1.0 / rate
    tasks: list[asyncio.Task] = []
    cpu0, start = _cpu_now(), time.perf_counter()
    for i in range(n):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(send(due)))
    results = await asyncio.gather(*tasks)
    elapsed, cpu = time.perf_counter() - start, _cpu_now() - cpu0
    if cleanup is not None:
        while not cleanup.empty():
            cleanup.get_nowait().close()
    latencies = [latency for latency, _ in results]
    errors = sum(1 for _, ok in results if not ok)
    return LoadResult(
        tool=tool, mode="open", concurrency=cap, requests=len(results), errors=errors, duration_s=elapsed,
        client_cpu_s=cpu, target_rate=rate, **_percentiles(latencies),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------ gRPC


def run_grpc_closed(
    target: str, request: bytes, *, concurrency: int, duration_s: float, method: str = GRPC_INFER_METHOD
) -> LoadResult:
    """Closed-loop gRPC load: ``concurrency`` calls in flight on one channel, request bytes pre-serialized.

    Args:
        target: ``host:port``.
        request: A serialized request message (e.g. ``ModelInferRequest.SerializeToString()``).
        concurrency: Calls kept in flight.
        duration_s: Length of the run.
        method: Full method path.
    """
    return asyncio.run(_grpc_closed(target, request, concurrency, duration_s, method))


async def _grpc_closed(target: str, request: bytes, concurrency: int, duration_s: float, method: str) -> LoadResult:
    import grpc

    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        # No (de)serializers: bytes go out as they are, and responses stay bytes (no client-side parsing).
        call = channel.unary_unary(method)
        await call(request, timeout=30)  # connect before the clock starts
        cpu0, start = _cpu_now(), time.perf_counter()
        deadline = start + duration_s

        async def worker() -> None:
            nonlocal errors
            clock = time.perf_counter
            while (t0 := clock()) < deadline:
                try:
                    await call(request, timeout=30)
                except grpc.aio.AioRpcError:
                    errors += 1
                latencies.append(clock() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, _cpu_now() - cpu0
    return LoadResult(
        tool="grpc-aio", mode="closed", concurrency=concurrency, requests=len(latencies), errors=errors,
        duration_s=elapsed, client_cpu_s=cpu, **_percentiles(latencies),
    )  # fmt: skip


def run_grpc_open(
    target: str,
    request: bytes,
    *,
    rate: float,
    duration_s: float,
    max_in_flight: int = 64,
    method: str = GRPC_INFER_METHOD,
) -> LoadResult:
    """Open-loop gRPC load: one call every ``1/rate`` s (at most ``max_in_flight`` at once), timed from due."""
    return asyncio.run(_grpc_open(target, request, rate, duration_s, max_in_flight, method))


async def _grpc_open(target: str, request: bytes, rate: float, duration_s: float, cap: int, method: str) -> LoadResult:
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(method)
        await call(request, timeout=30)
        slots = asyncio.Semaphore(cap)

        async def send(due: float) -> tuple[float, bool]:
            async with slots:
                try:
                    await call(request, timeout=30)
                    ok = True
                except grpc.aio.AioRpcError:
                    ok = False
            return time.perf_counter() - due, ok

        return await _open_loop(send, rate, duration_s, cap, tool="grpc-aio")
