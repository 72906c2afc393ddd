"""Serving fixtures: a small random MLP with non-trivial standardisation, published to a registry."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from kfkit.model import ModelSpec, build_model, predict_proba, save_model
from kfkit.registry import publish_folder

N_FEATURES = 30
FEATURE_NAMES = [f"x{i:02d}" for i in range(N_FEATURES)]


def _publish_random_mlp(root: Path, *, seed: int, n_rows: int, threshold: float = 0.5) -> SimpleNamespace:
    torch.manual_seed(0)
    spec = ModelSpec(name="test-mlp", feature_names=FEATURE_NAMES, hidden_dims=[16, 8], threshold=threshold)
    net = build_model(spec)
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 10, N_FEATURES).astype(np.float32)
    std = rng.uniform(0.5, 5, N_FEATURES).astype(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(mean))
        net.feature_std.copy_(torch.from_numpy(std))
    net.eval()
    model_dir = save_model(net, spec, root / "model")
    version = publish_folder(model_dir, registry_uri=f"file://{root}/reg", name="test-mlp")
    rows = (mean + std * rng.normal(0, 3, (n_rows, N_FEATURES))).astype(np.float32)
    return SimpleNamespace(
        uri=version.uri, model=net, spec=spec, model_dir=model_dir, root=root, rows=rows,
        expected=predict_proba(net, rows),
    )  # fmt: skip


@pytest.fixture(scope="session")
def publish_random_mlp(tmp_path_factory):
    """Call with (name, seed=..., n_rows=..., threshold=...) for a published random MLP and rows to score."""

    def _make(name: str, *, seed: int, n_rows: int, threshold: float = 0.5) -> SimpleNamespace:
        return _publish_random_mlp(tmp_path_factory.mktemp(name), seed=seed, n_rows=n_rows, threshold=threshold)

    return _make


@pytest.fixture(scope="session")
def validator() -> SimpleNamespace:
    """Every protocol decoder of a model with features x00..x29, served as test-mlp version 1.

    The decoders all end in one :class:`~kfkit.serving.tensors.TensorChecks`; ``features`` is that check itself.
    """
    from kfkit.serving.grpc_protocol import GrpcDecoder
    from kfkit.serving.tensors import TensorChecks
    from kfkit.serving.v1_protocol import V1Decoder
    from kfkit.serving.v2_protocol import V2Decoder

    checks = TensorChecks(FEATURE_NAMES)
    v2 = V2Decoder(checks, model_name="test-mlp", model_version="1")
    return SimpleNamespace(
        v1=V1Decoder(checks).decode,
        v2=v2.decode,
        v2_binary=v2.decode_binary,
        grpc=GrpcDecoder(checks).decode,
        features=checks.features,
    )


class PayloadReceiver:
    """A real HTTP server (aiohttp, own thread and loop) that records every request it gets.

    ``delay_s`` makes it answer slowly and ``status`` sets its answer, so tests can play a slow or failing
    CloudEvents receiver.
    """

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, str], bytes]] = []
        self.delay_s = 0.0
        self.status = 200
        self.url = ""
        self._loop = None
        self._thread = None
        self._runner = None

    def start(self) -> PayloadReceiver:
        import asyncio
        import threading

        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="payload-receiver", daemon=True)
        self._thread.start()
        assert ready.wait(10), "receiver did not start"
        return self

    async def _serve(self) -> None:
        import asyncio

        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.events.append(({k.lower(): v for k, v in request.headers.items()}, body))
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            return web.Response(status=self.status)

        app = web.Application()
        app.router.add_post("/{tail:.*}", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/events"

    def wait_for(self, predicate, timeout_s: float = 10.0) -> list[tuple[dict[str, str], bytes]]:
        """Poll until ``predicate(events)`` holds; return the events (the last poll's, if it never held)."""
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            events = list(self.events)
            if predicate(events):
                return events
            time.sleep(0.05)
        return list(self.events)

    def stop(self) -> None:
        import asyncio

        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def payload_receiver():
    """A running :class:`PayloadReceiver` (reset ``delay_s``/``status`` after changing them)."""
    receiver = PayloadReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def live_server(publish_random_mlp, payload_receiver, tmp_path_factory):
    """One real kfkit server for the hardening, metrics and payload-log tests: small body limit and payload
    queue, batching on, payload events to ``payload_receiver``. Yields (endpoint, published model)."""
    from kfkit.deploy.local import free_port, start_server, stop_server

    model = publish_random_mlp("live", seed=5, n_rows=6)
    endpoint = start_server(
        model.uri,
        model_name="test-mlp",
        http_port=free_port(),
        grpc_port=free_port(),
        log_path=tmp_path_factory.mktemp("live-logs") / "server.log",
        timeout_s=120,
        max_batch_size=16,
        max_batch_latency_ms=2.0,
        max_body_bytes=LIVE_MAX_BODY_BYTES,
        payload_log_url=payload_receiver.url,
        payload_log_queue_size=LIVE_PAYLOAD_QUEUE,
    )
    yield SimpleNamespace(
        endpoint=endpoint, model=model, max_body_bytes=LIVE_MAX_BODY_BYTES, payload_queue=LIVE_PAYLOAD_QUEUE
    )
    stop_server(endpoint)


LIVE_MAX_BODY_BYTES = 65_536
"""Body limit of the ``live_server`` (bytes)."""
LIVE_PAYLOAD_QUEUE = 8
"""Payload queue of the ``live_server`` (events)."""
