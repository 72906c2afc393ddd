"""Online feature lookup figures: the transformer's lookup (SQLite, Redis) and its end-to-end overhead.

Usage (from a source checkout's root, main environment):
    .venv/bin/python -m scripts.bench.feature_lookup [--lookups 3000] [--requests 1000] [--repeats 3]

Data: synthetic_fraud, 20,000 rows (1,000 cards), a generated repository (kfkit features apply), materialized
into SQLite and into a real redis-server (Debian's, started here on 127.0.0.1, no persistence). Measures, for
one entity and for batches of 64 distinct entities:

- the lookup alone, in this process: ``OnlineFeatureLookup.lookup`` (online store read, decode, the shared
  preprocess, TTL check), and Feast's own ``get_online_features`` through the FeatureService for comparison;
- end to end over HTTP, one request at a time: V1 ``{"card_id": id}`` rows through the transformer (which
  looks up and forwards to the predictor) against the same rows' raw features sent straight to the predictor.

Servers (predictor, transformer, redis-server) are pinned to core 0, this process to core 1; repeats alternate
predictor / transformer and the medians of the repeats are reported. Prints a markdown table and JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from .report import machine_line

FEATURES = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
NAME = "fraud-mlp"


def _pin(pid: int, core: int) -> None:
    if shutil.which("taskset"):
        subprocess.run(["taskset", "-a", "-c", "-p", str(core), str(pid)], capture_output=True, check=False)


def _percentiles(samples_s: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples_s) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def _time(call: Callable[[], object], n: int, warmup: int = 50) -> list[float]:
    for _ in range(warmup):
        call()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        out.append(time.perf_counter() - start)
    return out


@contextlib.contextmanager
def _redis(root: Path) -> Iterator[int]:
    from kfkit.deploy.local import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("missing tool: redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _pin(process.pid, 0)
        time.sleep(0.5)
        yield port
    finally:
        process.kill()
        process.wait(timeout=10)


def _repo(root: Path, store: str, redis_port: int | None, frame) -> Path:
    from kfkit.config import compose
    from kfkit.features.offline import write_offline_source
    from kfkit.features.repo import materialize

    overrides = ["dataset=synthetic_fraud", "features.enabled=true", f"features.repo_path={root / store}",
                 f"features.online_store={store}", "+features.transforms.amount=log1p"]  # fmt: skip
    if redis_port:
        overrides.append(f"features.redis.port={redis_port}")
    cfg = compose(overrides)
    write_offline_source(frame, cfg, root / store / "data")
    materialize(cfg.features.repo_path)
    return Path(cfg.features.repo_path)


def _model(root: Path, frame) -> str:
    import torch

    from kfkit.model import ModelSpec, build_model, save_model
    from kfkit.registry import publish_folder

    torch.manual_seed(0)
    spec = ModelSpec(name=NAME, feature_names=FEATURES, hidden_dims=[64])
    net = build_model(spec)
    data = frame[FEATURES].to_numpy(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(data.mean(0)))
        net.feature_std.copy_(torch.from_numpy(data.std(0)))
    net.eval()
    return publish_folder(save_model(net, spec, root / "model"), registry_uri=f"file://{root / 'reg'}", name=NAME).uri


@contextlib.contextmanager
def _transformer(repo: Path, uri: str, predictor_port: int, log: Path) -> Iterator[str]:
    import httpx

    from kfkit.deploy.local import free_port

    port = free_port()
    command = [sys.executable, "-m", "kfkit.serving.transformer", "--feast-repo", str(repo), "--model-uri", uri,
               "--predictor-host", f"127.0.0.1:{predictor_port}", "--http_port", str(port)]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                sys.exit(f"transformer exited:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=2, trust_env=False).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit(f"transformer not ready:\n{log.read_text()[-2000:]}")
            time.sleep(0.25)
        _pin(process.pid, 0)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def _cycle(call: Callable[[object], object], items: list) -> Callable[[], object]:
    """A no-argument call of ``call`` on the next of ``items`` (round robin)."""
    position = iter(range(10**12))
    return lambda: call(items[next(position) % len(items)])


def _median_of(runs: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def _lookup_cases(store: str, lookup, cards: list, rng, args) -> dict[str, tuple[float, float]]:
    """The lookup alone in this process, 1 and 64 ids, and Feast's get_online_features for one id."""
    service = lookup.store.get_feature_service("transactions")
    singles = [[int(c)] for c in rng.choice(cards, args.lookups)]
    batches = [[int(c) for c in rng.choice(cards, 64, replace=False)] for _ in range(max(1, args.lookups // 4))]
    feast = _cycle(
        lambda ids: lookup.store.get_online_features(features=service, entity_rows=[{"card_id": ids[0]}]).to_dict(),
        singles,
    )
    runs: dict[str, list] = {"lookup 1": [], "lookup 64": [], "feast get_online_features 1": []}
    for _ in range(args.repeats):
        runs["lookup 1"].append(_percentiles(_time(_cycle(lookup.lookup, singles), args.lookups)))
        runs["lookup 64"].append(_percentiles(_time(_cycle(lookup.lookup, batches), len(batches))))
        runs["feast get_online_features 1"].append(_percentiles(_time(feast, min(500, args.lookups))))
    return {f"{store} {case}": _median_of(values) for case, values in runs.items()}


def _http_cases(store: str, turl: str, predictor_port: int, frame, cards: list, rng, args) -> dict:
    """One request at a time: ids through the transformer against the same rows straight to the predictor."""
    import httpx

    latest = frame.sort_values("event_timestamp").groupby("card_id").tail(1).set_index("card_id")
    out = {}
    predictor_url = f"http://127.0.0.1:{predictor_port}/v1/models/{NAME}:predict"
    transformer_url = f"{turl}/v1/models/{NAME}:predict"
    with httpx.Client(timeout=30, trust_env=False) as client:
        for n in (1, 64):
            ids = [[int(c) for c in rng.choice(cards, n, replace=False)] for _ in range(200)]
            raw = [latest.loc[i, FEATURES].to_numpy(np.float32).tolist() for i in ids]
            direct = _cycle(lambda rows: client.post(predictor_url, json={"instances": rows}), raw)
            via = _cycle(
                lambda batch: client.post(transformer_url, json={"instances": [{"card_id": i} for i in batch]}), ids
            )
            first = via()
            assert first.status_code == 200, first.text
            runs: dict[str, list] = {"predictor": [], "transformer": []}
            for _ in range(args.repeats):  # alternate, so a noisy neighbour hits both alike
                runs["predictor"].append(_percentiles(_time(direct, args.requests)))
                runs["transformer"].append(_percentiles(_time(via, args.requests)))
            for who, values in runs.items():
                out[f"{store} http {who} {n}"] = _median_of(values)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.bench.feature_lookup", description=__doc__.split("\n")[0])
    parser.add_argument("--lookups", type=int, default=3000, help="in-process lookups per case")
    parser.add_argument("--requests", type=int, default=1000, help="HTTP requests per case and repeat")
    parser.add_argument("--repeats", type=int, default=3, help="alternating predictor/transformer repeats")
    args = parser.parse_args(argv)

    from kfkit.data.sources import synthetic_fraud
    from kfkit.deploy.local import free_port, start_server, stop_server
    from kfkit.features.online import OnlineFeatureLookup

    os.environ["OMP_NUM_THREADS"] = "1"  # the servers inherit it: one thread each, as the other benches
    os.sched_setaffinity(0, {1})
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-features-") as tmp:
        root = Path(tmp)
        frame = synthetic_fraud(n_rows=20_000, seed=7)
        cards = np.unique(frame.card_id.to_numpy()).tolist()
        uri = _model(root, frame)
        predictor = start_server(uri, model_name=NAME, http_port=free_port(), grpc_port=free_port(),
                                 log_path=root / "predictor.log")  # fmt: skip
        _pin(predictor.pid, 0)
        try:
            with _redis(root) as redis_port:
                for store in ("sqlite", "redis"):
                    repo = _repo(root, store, redis_port if store == "redis" else None, frame)
                    results |= _lookup_cases(store, OnlineFeatureLookup(repo, FEATURES), cards, rng, args)
                    with _transformer(repo, uri, predictor.http_port, root / f"transformer-{store}.log") as turl:
                        results |= _http_cases(store, turl, predictor.http_port, frame, cards, rng, args)
        finally:
            stop_server(predictor)
    print(f"machine: {machine_line()}")
    print("| case | p50 ms | p99 ms |\n|---|---:|---:|")
    for case, (p50, p99) in results.items():
        print(f"| {case} | {p50:.3f} | {p99:.3f} |")
    for store in ("sqlite", "redis"):
        for n in (1, 64):
            t, p = results[f"{store} http transformer {n}"], results[f"{store} http predictor {n}"]
            print(f"| {store} transformer overhead vs predictor, batch {n} | {t[0] - p[0]:.3f} | {t[1] - p[1]:.3f} |")
    print(json.dumps({k: {"p50_ms": v[0], "p99_ms": v[1]} for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
