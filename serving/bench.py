"""``kfkit bench serve``: kfkit's model server against Seldon MLServer and the raw forward pass, side by side.

One 30→64→1 MLP (fixed seed) is published to a temporary file:// registry; kfkit's server loads it from
there, MLServer 1.7.1 (its own environment, ``.venv-mlserver``) loads the same safetensors through a small
custom runtime, and both get the same request bytes. Servers are pinned to one core with one torch thread,
the load generator to another; configurations are alternated A/B/A/B and the medians of the repeats are
reported: req/s, rows/s, p50/p95/p99 latency, errors, and the server's CPU-microseconds per request
(utime+stime from /proc, which does not depend on how fast the client is) next to the in-process
forward-pass cost (the limit). Also measured: p99 at 70% of peak from an open-loop run, and adaptive
batching on against off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from kfkit.config import ServingConfig
from kfkit.deploy.local import free_port
from kfkit.errors import ServingError
from kfkit.serving.bench_load import (
    HttpTarget,
    LoadResult,
    run_grpc_closed,
    run_grpc_open,
    run_http_closed,
    run_http_open,
    run_wrk,
    wrk_available,
)

__all__ = [
    "BenchSettings",
    "PRESETS",
    "run_bench",
    "render_markdown",
    "build_parser",
    "main",
    "MODEL_NAME",
    "DEFAULT_MLSERVER_VENV",
]

MODEL_NAME = "bench-mlp"
N_FEATURES = 30
HIDDEN = [64]
DEFAULT_MLSERVER_VENV = ".venv-mlserver"
_RUNTIME_MODULE = "kfkit_bench_runtime"  # the name the runtime file gets in MLServer's model folder
_BATCH_FLAGS = ("--max-batch-size", "--max_batch_size")
_READY_TIMEOUT_S = 180.0
MLSERVER_VARIANTS = ("mlserver", "mlserver-batching", "mlserver-default")
"""MLServer settings the bench can run; each ratio is taken against the best of those that ran."""
_BATCHING_ONLY = ("-nobatch", "-tf")  # servers that only run in the batching comparison

# Sweep cases, in the order they alternate: kfkit and MLServer interleaved protocol by protocol.
SWEEP_CASES = (
    ("kfkit", "v2-rest"),
    ("mlserver", "v2-rest"),
    ("kfkit", "v2-grpc"),
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
    (tuned plus MLServer's adaptive batching, kfkit's limits), ``mlserver-default``. Ratios use the best
    MLServer setting of each cell."""
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


# ----------------------------------------------------------------------------------- the model


@dataclass
class _Model:
    uri: str
    model_dir: Path
    rows: Any  # float32 (64, 30): request rows
    expected: Any  # float32 (64,): in-process probabilities of ``rows``


def _publish_model(root: Path) -> _Model:
    """The benchmark model: 30→64→1 MLP with non-trivial standardisation, fixed seed, published."""
    import numpy as np
    import torch

    from kfkit.data.sources import synthetic_fraud
    from kfkit.model import ModelSpec, build_model, predict_proba, save_model
    from kfkit.registry import publish_folder

    torch.manual_seed(0)
    names = [f"v{i:02d}" for i in range(1, N_FEATURES - 1)] + ["amount", "hour"]
    spec = ModelSpec(name=MODEL_NAME, feature_names=names, hidden_dims=HIDDEN, threshold=0.5)
    net = build_model(spec)
    frame = synthetic_fraud(n_rows=2000, seed=7)
    data = frame[names].to_numpy(np.float32)
    with torch.no_grad():
        net.feature_mean.copy_(torch.from_numpy(data.mean(0)))
        net.feature_std.copy_(torch.from_numpy(data.std(0) + 1e-6))
    net.eval()
    model_dir = save_model(net, spec, root / "model")
    version = publish_folder(model_dir, registry_uri=f"file://{root / 'registry'}", name=MODEL_NAME)
    # Four decimals: realistic request sizes, and the JSON text is then exactly these float32 values' source.
    rows = np.round(data[:64], 4).astype(np.float32)
    return _Model(uri=version.uri, model_dir=Path(version.path), rows=rows, expected=predict_proba(net, rows))


def _publish_tf_twin(root: Path, model: _Model) -> _Model:
    """The same MLP (same weights) as a TensorFlow SavedModel, published to its own registry.

    kfkit serves SavedModels through TensorFlow's function call, which costs about 300 µs whatever the batch
    size; the batching comparison runs on both, to show what batching buys when the forward pass dominates.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf
    from torch import nn

    from kfkit.model import SPEC_FILE, load_model
    from kfkit.model.keras import load_tf_scorer
    from kfkit.registry import publish_folder
    from kfkit.training.tf_trainer import build_keras_mlp, export_saved_model

    tf.config.threading.set_intra_op_parallelism_threads(1)
    net, spec = load_model(model.model_dir)
    keras_model = build_keras_mlp(
        spec.input_dim, spec.hidden_dims, 0.0, net.feature_mean.numpy(), net.feature_std.numpy()
    )
    linears = [layer for layer in net.net if isinstance(layer, nn.Linear)]
    dense = [keras_model.get_layer(f"dense_{i}") for i in range(len(spec.hidden_dims))] + [
        keras_model.get_layer("logit")
    ]
    for torch_layer, keras_layer in zip(linears, dense, strict=True):
        keras_layer.set_weights([torch_layer.weight.detach().numpy().T, torch_layer.bias.detach().numpy()])
    out = root / "tf-model"
    export_saved_model(keras_model, spec.input_dim, out)
    twin = replace(spec, framework="tensorflow")
    (out / SPEC_FILE).write_text(json.dumps(asdict(twin), indent=2, sort_keys=True) + "\n")
    expected = np.asarray(load_tf_scorer(out)(model.rows), dtype=np.float32)
    if not np.allclose(expected, model.expected, rtol=0, atol=1e-5):
        raise ServingError(
            f"the TensorFlow twin disagrees with the PyTorch model: {expected[:4]} vs {model.expected[:4]}"
        )
    version = publish_folder(out, registry_uri=f"file://{root / 'registry-tf'}", name=MODEL_NAME)
    return _Model(uri=version.uri, model_dir=Path(version.path), rows=model.rows, expected=expected)


def _v2_body(rows: Any) -> bytes:
    flat = [float(f"{v:.4f}") for v in rows.reshape(-1).tolist()]
    body = {"inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": flat}]}
    return json.dumps(body, separators=(",", ":")).encode()


def _v1_body(rows: Any) -> bytes:
    instances = [[float(f"{v:.4f}") for v in row] for row in rows.tolist()]
    return json.dumps({"instances": instances}, separators=(",", ":")).encode()


def _grpc_request(rows: Any) -> bytes:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=list(rows.shape))
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    return pb.ModelInferRequest(model_name=MODEL_NAME, inputs=[tensor]).SerializeToString()


# --------------------------------------------------------------------------------------- servers


def _pinned(command: list[str], cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return command
    return ["taskset", "-c", str(cpu), *command]


def _one_thread_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _process_group_cpu_s(pgid: int) -> float:
    """utime+stime (seconds) of every live process in a process group, threads included."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        # after "pid (comm)": state ppid pgrp session ... utime(14th field overall) stime(15th)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass
class _Server:
    name: str
    kind: str  # "kfkit" or "mlserver"
    command: list[str]
    http_port: int
    grpc_port: int
    log_path: Path
    cwd: Path | None = None
    process: subprocess.Popen | None = None
    description: str = ""

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {shlex.join(self.command)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=_one_thread_env(),
                cwd=self.cwd,
            )

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        import httpx

        urls = [f"{self.base_url}/v2/health/ready", f"{self.base_url}/v2/models/{MODEL_NAME}/ready"]
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise ServingError(
                        f"{self.name} exited with code {self.process.returncode} before it was ready; "
                        f"see {self.log_path}:\n{_tail(self.log_path)}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if all(client.get(url).status_code == 200 for url in urls):
                        return
                if time.monotonic() > deadline:
                    raise ServingError(f"{self.name} not ready within {timeout_s:g}s; see {self.log_path}")
                time.sleep(0.25)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def cpu_s(self) -> float:
        return _process_group_cpu_s(self.process.pid) if self.process else 0.0

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait_s)
                return


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def kfkit_batch_flag() -> str | None:
    """The kfkit server's max-batch-size flag, if this version has one (adaptive batching)."""
    result = subprocess.run(
        [sys.executable, "-m", "kfkit.serving.server", "--help"], capture_output=True, text=True, timeout=120
    )
    return next((flag for flag in _BATCH_FLAGS if flag in result.stdout), None)


def _kfkit_server(name: str, model: _Model, settings: BenchSettings, logs: Path, extra: Sequence[str] = ()) -> _Server:
    http_port, grpc_port = free_port(), free_port()
    command = [
        sys.executable,
        "-m",
        "kfkit.serving.server",
        "--model-uri",
        model.uri,
        "--model-name",
        MODEL_NAME,
        "--host",
        "127.0.0.1",
        "--http_port",
        str(http_port),
        "--grpc_port",
        str(grpc_port),
        "--num-threads",
        "1",
        *settings.kfkit_args,
        *extra,
    ]
    return _Server(
        name=name,
        kind="kfkit",
        command=_pinned(command, settings.server_cpu),
        http_port=http_port,
        grpc_port=grpc_port,
        log_path=logs / f"{name}.log",
        description="kfkit server as shipped" + (f" + {' '.join(extra)}" if extra else ""),
    )


def mlserver_python(settings: BenchSettings) -> Path | None:
    """The MLServer environment's interpreter, or None when it has not been built."""
    venv = Path(settings.mlserver_venv)
    if not venv.is_absolute():
        venv = Path(__file__).resolve().parents[1] / venv
    binary = venv / "bin" / "mlserver"
    return binary if binary.is_file() else None


def _mlserver(
    name: str, model: _Model, settings: BenchSettings, logs: Path, work: Path, *, tuned: bool, batching: bool = False
) -> _Server:
    binary = mlserver_python(settings)
    if binary is None:
        raise ServingError(f"MLServer is not installed at {settings.mlserver_venv}")
    folder = work / name
    model_folder = folder / MODEL_NAME
    model_folder.mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("bench_mlserver_runtime.py"), model_folder / f"{_RUNTIME_MODULE}.py")
    http_port, grpc_port = free_port(), free_port()
    server_settings: dict[str, Any] = {"host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port}
    server_settings["metrics_port"] = free_port()
    if tuned:  # MLServer's fastest single-worker setting: inference in the server process, no metrics, no debug
        server_settings |= {"parallel_workers": 0, "metrics_endpoint": None, "debug": False}
    (folder / "settings.json").write_text(json.dumps(server_settings, indent=2))
    model_settings = {
        "name": MODEL_NAME,
        "implementation": f"{_RUNTIME_MODULE}.KfkitMLP",
        "parameters": {"uri": str(model.model_dir)},
    }
    if batching:  # MLServer's own adaptive batching, with kfkit's default limits
        defaults = ServingConfig()
        model_settings |= {
            "max_batch_size": defaults.max_batch_size,
            "max_batch_time": defaults.max_batch_latency_ms / 1000,
        }
    (model_folder / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
    return _Server(
        name=name,
        kind="mlserver",
        command=_pinned([str(binary), "start", str(folder)], settings.server_cpu),
        http_port=http_port,
        grpc_port=grpc_port,
        log_path=logs / f"{name}.log",
        cwd=folder,
        description="MLServer 1.7.1, "
        + ("parallel_workers=0, metrics off, debug off" if tuned else "defaults")
        + (", adaptive batching (max_batch_size, max_batch_time)" if batching else ""),
    )


# ------------------------------------------------------------------------------- correctness check


def _check_answers(server: _Server, protocol: str, model: _Model) -> None:
    """One batch-64 request: the server's probabilities must equal the in-process model's (1e-6)."""
    import httpx
    import numpy as np

    rows = model.rows
    if protocol == "v2-grpc":
        import grpc
        from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

        with grpc.insecure_channel(server.grpc_target) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            reply = pb.ModelInferResponse.FromString(call(_grpc_request(rows), timeout=30))
        index = [o.name for o in reply.outputs].index("probability")
        if reply.raw_output_contents:
            got = np.frombuffer(reply.raw_output_contents[index], dtype=np.float32)
        else:
            got = np.asarray(reply.outputs[index].contents.fp32_contents, dtype=np.float32)
    else:
        v1 = protocol == "v1-rest"
        url = (
            f"{server.base_url}/v1/models/{MODEL_NAME}:predict"
            if v1
            else f"{server.base_url}/v2/models/{MODEL_NAME}/infer"
        )
        response = httpx.post(
            url,
            content=_v1_body(rows) if v1 else _v2_body(rows),
            timeout=30,
            trust_env=False,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 200:
            raise ServingError(f"{server.name} {protocol} answered {response.status_code}: {response.text[:300]}")
        body = response.json()
        if v1:
            got = np.asarray([p["probability"] for p in body["predictions"]], dtype=np.float32)
        else:
            got = np.asarray(next(o for o in body["outputs"] if o["name"] == "probability")["data"], dtype=np.float32)
    if got.shape != model.expected.shape or not np.allclose(got, model.expected, rtol=0, atol=1e-6):
        raise ServingError(
            f"{server.name} {protocol} does not answer the model's probabilities: {got[:4]} vs " f"{model.expected[:4]}"
        )


# --------------------------------------------------------------------------------------- measuring


@dataclass
class _Payloads:
    v2_rest: dict[int, bytes]
    v1_rest: dict[int, bytes]
    grpc: dict[int, bytes]


def _load(
    server: _Server,
    protocol: str,
    payloads: _Payloads,
    batch: int,
    *,
    concurrency: int,
    duration_s: float,
    settings: BenchSettings,
    rate: float | None = None,
) -> LoadResult:
    if protocol == "v2-grpc":
        request = payloads.grpc[batch]
        if rate is not None:
            return run_grpc_open(server.grpc_target, request, rate=rate, duration_s=duration_s)
        return run_grpc_closed(server.grpc_target, request, concurrency=concurrency, duration_s=duration_s)
    if protocol == "v1-rest":
        target = HttpTarget("127.0.0.1", server.http_port, f"/v1/models/{MODEL_NAME}:predict", payloads.v1_rest[batch])
    else:
        target = HttpTarget("127.0.0.1", server.http_port, f"/v2/models/{MODEL_NAME}/infer", payloads.v2_rest[batch])
    if rate is not None:
        return run_http_open(target, rate=rate, duration_s=duration_s)
    if settings.use_wrk and wrk_available() and duration_s >= 1:
        return run_wrk(target, concurrency=concurrency, duration_s=duration_s, cpu=settings.client_cpu)
    return run_http_closed(target, concurrency=concurrency, duration_s=duration_s)


def _measure(
    server: _Server,
    protocol: str,
    payloads: _Payloads,
    batch: int,
    *,
    concurrency: int,
    duration_s: float,
    settings: BenchSettings,
    rate: float | None = None,
    **labels: Any,
) -> dict[str, Any]:
    cpu0 = server.cpu_s()
    result = _load(
        server, protocol, payloads, batch, concurrency=concurrency, duration_s=duration_s, settings=settings, rate=rate
    )
    cpu = server.cpu_s() - cpu0
    ok = result.requests - result.errors
    return {
        "server": server.name,
        "protocol": protocol,
        "batch": batch,
        "concurrency": concurrency,
        **labels,
        "req_per_s": result.req_per_s,
        "rows_per_s": result.req_per_s * batch,
        "p50_ms": result.p50_ms,
        "p95_ms": result.p95_ms,
        "p99_ms": result.p99_ms,
        "errors": result.errors,
        "requests": result.requests,
        "server_cpu_s": cpu,
        "server_cpu_us_per_req": cpu * 1e6 / ok if ok else None,
        "server_cpu_share": cpu / result.duration_s if result.duration_s else 0.0,
        "load": result.to_dict(),
    }


def _median_rows(runs: list[dict], keys: Sequence[str]) -> list[dict]:
    """Group runs by ``keys`` and take the median of every figure (errors are summed)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault(tuple(run[k] for k in keys), []).append(run)
    rows = []
    for key, group in groups.items():
        row = dict(zip(keys, key, strict=True))
        for figure in (
            "req_per_s",
            "rows_per_s",
            "p50_ms",
            "p95_ms",
            "p99_ms",
            "server_cpu_us_per_req",
            "server_cpu_share",
        ):
            values = [r[figure] for r in group if r[figure] is not None]
            row[figure] = statistics.median(values) if values else None
        row["client_cpu_share"] = statistics.median(r["load"]["client_cpu_share"] for r in group)
        row["errors"] = sum(r["errors"] for r in group)
        row["requests"] = sum(r["requests"] for r in group)
        row["runs"] = [round(r["req_per_s"], 1) for r in group]
        row["tool"] = group[0]["load"]["tool"]
        if "target_rate" in group[0]:
            row["target_rate"] = group[0]["target_rate"]
        rows.append(row)
    return rows


_FORWARD_CODE = r"""
import json, sys, time
import numpy as np, orjson, torch
torch.set_num_threads(1)
from kfkit.model import load_model, predict_proba
model, spec = load_model(sys.argv[1])
seconds = float(sys.argv[2])
out = {}
for batch in [int(b) for b in sys.argv[3].split(",")]:
    rows = np.random.default_rng(0).normal(size=(batch, spec.input_dim)).astype(np.float32)
    body = orjson.dumps({"inputs": [{"name": "features", "shape": [batch, spec.input_dim], "datatype": "FP32",
                                     "data": np.round(rows, 4).reshape(-1).tolist()}]})
    def forward():
        predict_proba(model, rows)
    def json_path():
        request = orjson.loads(body)
        x = np.asarray(request["inputs"][0]["data"], dtype=np.float32).reshape(request["inputs"][0]["shape"])
        p = predict_proba(model, x)
        orjson.dumps({"outputs": [{"name": "probability", "shape": [batch], "datatype": "FP32", "data": p.tolist()},
                                  {"name": "label", "shape": [batch], "datatype": "INT64",
                                   "data": (p >= 0.5).astype(np.int64).tolist()}]})
    for name, fn in (("forward", forward), ("json_forward", json_path)):
        for _ in range(200):
            fn()
        wall, cpu = [], []
        for _ in range(3):
            n, start, cpu0 = 0, time.perf_counter(), time.process_time()
            while (elapsed := time.perf_counter() - start) < seconds / 3:
                for _ in range(100):
                    fn()
                n += 100
            wall.append(elapsed / n)
            cpu.append((time.process_time() - cpu0) / n)
        # CPU time: what a busy machine disturbs least, and what the servers' µs/req measure too
        out[f"{name}_b{batch}"] = sorted(cpu)[1] * 1e6
        out[f"{name}_b{batch}_wall"] = sorted(wall)[1] * 1e6
print("KFKIT_FORWARD " + json.dumps(out))
"""


def _measure_forward(
    model: _Model, settings: BenchSettings, batches: Sequence[int], seconds: float
) -> dict[str, float]:
    """µs per call of the bare forward pass, and of V2 JSON decode+forward+encode, on the server core."""
    command = _pinned(
        [sys.executable, "-c", _FORWARD_CODE, str(model.model_dir), str(seconds), ",".join(map(str, batches))],
        settings.server_cpu,
    )
    result = subprocess.run(command, capture_output=True, text=True, env=_one_thread_env(), timeout=600)
    line = next((x for x in result.stdout.splitlines() if x.startswith("KFKIT_FORWARD ")), None)
    if result.returncode != 0 or line is None:
        raise ServingError(f"forward-pass timing failed: {result.stderr[-1000:]}")
    return json.loads(line.split(" ", 1)[1])


# ------------------------------------------------------------------------------------------ machine


def _machine() -> dict[str, Any]:
    def text(command: list[str]) -> str:
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import torch

    lscpu = text(["lscpu"])
    model_line = next(
        (line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), ""
    )
    repo = Path(__file__).resolve().parents[1]
    return {
        "cpu": model_line or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wrk": text(["wrk", "--version"]).split(" Copyright")[0] if wrk_available() else None,
        "git": text(["git", "-C", str(repo), "describe", "--always", "--dirty"]),
        "lscpu": lscpu,
    }


def _loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


# ----------------------------------------------------------------------------------------- the run


def _progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


@contextlib.contextmanager
def _pinned_self(cpu: int | None) -> Iterator[None]:
    """Pin this process (the Python load generators) to ``cpu`` for the duration."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_bench(settings: BenchSettings, out_dir: Path, *, command: str | None = None) -> dict[str, Any]:
    """Run the whole comparison and write ``results.json`` and ``results.md`` into ``out_dir``.

    Args:
        settings: What to measure (see :data:`PRESETS`).
        out_dir: Folder for the results and the servers' logs.
        command: The command line to record with the results.

    Returns:
        The results (what ``results.json`` holds).

    Raises:
        ServingError: a server did not start, or answered different probabilities than the model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = out_dir / "logs"
    cpus = os.cpu_count() or 1
    notes: list[str] = []
    if cpus < 2 or max(settings.server_cpu, settings.client_cpu) >= cpus:
        notes.append(f"only {cpus} CPU(s): server and load generator are not pinned apart")
        settings = replace(settings, server_cpu=None, client_cpu=None)  # type: ignore[arg-type]
    if not (settings.use_wrk and wrk_available()):
        notes.append("wrk not used: closed-loop REST load came from the asyncio client (apt-get install wrk)")
    servers_wanted = list(settings.servers)
    if any(s.startswith("mlserver") for s in servers_wanted) and mlserver_python(settings) is None:
        notes.append(
            f"MLServer skipped: {settings.mlserver_venv} does not exist (build it with "
            "`make .venv-mlserver/.installed`, or python3.11 -m venv .venv-mlserver && "
            ".venv-mlserver/bin/pip install -r requirements/mlserver.in -c requirements/mlserver.lock)"
        )
        servers_wanted = [s for s in servers_wanted if not s.startswith("mlserver")]
    load = _loadavg()
    if load and load[0] > 0.5:
        notes.append(
            f"the machine was busy before the run (load average {load[0]:.2f}): figures are preliminary; the "
            "server CPU column shows how much of its core each server got, and µs/req is the least disturbed figure"
        )
    for note in notes:
        _progress("NOTE: " + note)
    results: dict[str, Any] = {
        "command": command or shlex.join(sys.argv),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": asdict(settings),
        "machine": _machine(),
        "loadavg_before": load,
        "notes": notes,
    }
    servers: dict[str, _Server] = {}
    with tempfile.TemporaryDirectory(prefix="kfkit-bench-serve-") as tmp, _pinned_self(settings.client_cpu):
        work = Path(tmp)
        model = _publish_model(work)
        payloads = _Payloads(
            v2_rest={b: _v2_body(model.rows[:b]) for b in settings.batches},
            v1_rest={b: _v1_body(model.rows[:b]) for b in settings.batches},
            grpc={b: _grpc_request(model.rows[:b]) for b in settings.batches},
        )
        results["payload_bytes"] = {
            f"{kind}_b{b}": len(getattr(payloads, kind)[b])
            for kind in ("v2_rest", "v1_rest", "grpc")
            for b in settings.batches
        }
        try:
            if settings.forward:
                _progress("timing the in-process forward pass on the server core")
                results["forward_us"] = _measure_forward(
                    model, settings, settings.batches, 3.0 if settings.mode != "quick" else 0.6
                )
            batch_flag = kfkit_batch_flag() if settings.batching else None
            models: dict[str, _Model] = {}  # servers that serve another model than ``model``
            for name in servers_wanted:
                if name == "kfkit":
                    servers[name] = _kfkit_server(name, model, settings, logs)
                elif name in MLSERVER_VARIANTS:
                    servers[name] = _mlserver(
                        name,
                        model,
                        settings,
                        logs,
                        work,
                        tuned=name != "mlserver-default",
                        batching=name.endswith("batching"),
                    )
                else:
                    known = ", ".join(("kfkit", *MLSERVER_VARIANTS))
                    raise ServingError(f"unknown server {name!r}; choose from {known}")
            if settings.batching and "kfkit" in servers:
                if batch_flag is None:
                    notes.append(
                        "adaptive batching comparison skipped: kfkit's server has no --max-batch-size flag yet"
                    )
                else:
                    servers["kfkit-nobatch"] = _kfkit_server("kfkit-nobatch", model, settings, logs, [batch_flag, "1"])
                    if "tensorflow" in settings.batching_frameworks:
                        _progress("exporting the same MLP as a TensorFlow SavedModel for the batching comparison")
                        models["kfkit-tf"] = models["kfkit-tf-nobatch"] = tf_model = _publish_tf_twin(work, model)
                        servers["kfkit-tf"] = _kfkit_server("kfkit-tf", tf_model, settings, logs)
                        servers["kfkit-tf-nobatch"] = _kfkit_server(
                            "kfkit-tf-nobatch", tf_model, settings, logs, [batch_flag, "1"]
                        )
            for server in servers.values():  # start all, then wait: they load in parallel
                server.start()
            for server in servers.values():
                _progress(f"waiting for {server.name} ({server.description})")
                server.wait_ready()
            results["servers"] = {
                s.name: {"command": shlex.join(s.command), "description": s.description} for s in servers.values()
            }
            cases = [(s, p) for s, p in SWEEP_CASES if s in servers and p in settings.protocols]
            cases += [
                (variant, p)
                for variant in ("mlserver-batching", "mlserver-default")
                for p in ("v2-rest", "v2-grpc")
                if variant in servers and p in settings.protocols
            ]
            batching_only = [name for name in servers if name.startswith("kfkit-") and name.endswith(_BATCHING_ONLY)]
            for name, protocol in cases + [
                (name, p) for name in batching_only for p in ("v2-rest", "v2-grpc") if p in settings.protocols
            ]:
                _check_answers(servers[name], protocol, models.get(name, model))
                _load(
                    servers[name],
                    protocol,
                    payloads,
                    settings.batches[0],
                    concurrency=8,
                    duration_s=settings.warmup_s,
                    settings=replace(settings, use_wrk=False),
                )  # warm-up
            _progress(f"answers match the in-process model (1e-6) on {len(cases)} server/protocol pairs; sweeping")
            results["sweep_runs"] = runs = _sweep(servers, cases, payloads, settings)
            results["sweep"] = sweep = _median_rows(runs, ("server", "protocol", "batch", "concurrency"))
            peaks = _peaks(sweep)
            results["peaks"] = peaks
            if settings.open_loop:
                results["open_loop"] = _open_loop(servers, cases, payloads, peaks, settings)
            if "kfkit-nobatch" in servers:
                results["batching"] = _batching(servers, payloads, settings)
        finally:
            for server in servers.values():
                server.stop()
    results["loadavg_after"] = _loadavg()
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["summary"] = _summary(results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "results.md").write_text(render_markdown(results))
    return results


def _sweep(
    servers: dict[str, _Server], cases: list[tuple[str, str]], payloads: _Payloads, settings: BenchSettings
) -> list[dict]:
    """The closed-loop grid: batch x concurrency x repeat, servers alternated A/B/A/B inside each cell."""
    runs = []
    for batch in settings.batches:
        for concurrency in settings.concurrencies:
            for repeat in range(settings.repeats):
                for name, protocol in cases:
                    run = _measure(
                        servers[name],
                        protocol,
                        payloads,
                        batch,
                        concurrency=concurrency,
                        duration_s=settings.duration_s,
                        settings=settings,
                        repeat=repeat,
                    )
                    runs.append(run)
                    _progress(
                        f"b{batch} c{concurrency} r{repeat + 1} {name:<16} {protocol:<8} "
                        f"{run['req_per_s']:8,.0f} req/s  p99 {run['p99_ms']:7.2f} ms  errors {run['errors']}  "
                        f"server {run['server_cpu_us_per_req'] or 0:6.0f} µs/req"
                    )
    return runs


def _peaks(sweep: list[dict]) -> dict[str, dict]:
    """Best median req/s over the concurrency sweep, per server, protocol and batch."""
    peaks: dict[str, dict] = {}
    for row in sweep:
        key = f"{row['server']}/{row['protocol']}/b{row['batch']}"
        if key not in peaks or row["req_per_s"] > peaks[key]["req_per_s"]:
            peaks[key] = {
                "req_per_s": row["req_per_s"],
                "rows_per_s": row["rows_per_s"],
                "concurrency": row["concurrency"],
                "p99_ms": row["p99_ms"],
            }
    return peaks


def _open_loop(
    servers: dict[str, _Server], cases: list[tuple[str, str]], payloads: _Payloads, peaks: dict, settings: BenchSettings
) -> list[dict]:
    """p50/p95/p99 at ``open_loop_fraction`` of each server's own batch-1 peak, open loop, alternated."""
    batch = 1 if 1 in settings.batches else settings.batches[0]
    chosen = [(s, p) for s, p in cases if p in ("v2-rest", "v2-grpc") and f"{s}/{p}/b{batch}" in peaks]
    runs = []
    for repeat in range(settings.repeats):
        for name, protocol in chosen:
            rate = settings.open_loop_fraction * peaks[f"{name}/{protocol}/b{batch}"]["req_per_s"]
            run = _measure(
                servers[name],
                protocol,
                payloads,
                batch,
                concurrency=64,
                rate=rate,
                duration_s=settings.open_loop_duration_s,
                settings=settings,
                repeat=repeat,
                target_rate=round(rate, 1),
            )
            runs.append(run)
            _progress(
                f"open loop {name:<16} {protocol:<8} at {rate:8,.0f}/s: p50 {run['p50_ms']:.2f} "
                f"p99 {run['p99_ms']:.2f} ms, errors {run['errors']}"
            )
    return _median_rows(runs, ("server", "protocol", "batch", "concurrency"))


def _batching(servers: dict[str, _Server], payloads: _Payloads, settings: BenchSettings) -> list[dict]:
    """Kfkit with adaptive batching (default) against max batch size 1, batch-1 requests, high concurrency.

    Per model (the PyTorch MLP, and its TensorFlow twin when that was served), per protocol, on and off
    alternate within each repeat.
    """
    pairs = [("kfkit", "kfkit-nobatch"), ("kfkit-tf", "kfkit-tf-nobatch")]
    cases = [
        (s, p)
        for pair in pairs
        if all(name in servers for name in pair)
        for p in ("v2-rest", "v2-grpc")
        if p in settings.protocols
        for s in pair
    ]
    runs = []
    for repeat in range(settings.repeats):
        for name, protocol in cases:
            run = _measure(
                servers[name],
                protocol,
                payloads,
                1 if 1 in settings.batches else settings.batches[0],
                concurrency=settings.batching_concurrency,
                duration_s=settings.duration_s,
                settings=settings,
                repeat=repeat,
            )
            runs.append(run)
            _progress(f"batching {name:<14} {protocol:<8} {run['req_per_s']:8,.0f} req/s  p99 {run['p99_ms']:.2f} ms")
    return _median_rows(runs, ("server", "protocol", "batch", "concurrency"))


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _summary(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios the acceptance criteria ask for, from the medians."""
    peaks = results.get("peaks", {})
    summary: dict[str, Any] = {}

    def best_mlserver(protocol: str, batch: str) -> tuple[str, dict] | tuple[None, None]:
        """MLServer's best setting for this cell (tuned, adaptive batching or defaults): the peer's best."""
        found = [(s, peaks[f"{s}/{protocol}/{batch}"]) for s in MLSERVER_VARIANTS if f"{s}/{protocol}/{batch}" in peaks]
        return max(found, key=lambda item: item[1]["req_per_s"]) if found else (None, None)

    for protocol in ("v2-rest", "v2-grpc"):
        kfkit, (name, ml) = peaks.get(f"kfkit/{protocol}/b1"), best_mlserver(protocol, "b1")
        summary[f"b1_{protocol}_peak_vs_mlserver"] = _ratio(kfkit and kfkit["req_per_s"], ml and ml["req_per_s"])
        summary[f"b1_{protocol}_mlserver_best"] = name
        kfkit64, (name64, ml64) = peaks.get(f"kfkit/{protocol}/b64"), best_mlserver(protocol, "b64")
        summary[f"b64_{protocol}_rows_vs_mlserver"] = _ratio(
            kfkit64 and kfkit64["rows_per_s"], ml64 and ml64["rows_per_s"]
        )
        summary[f"b64_{protocol}_mlserver_best"] = name64
    # CPU per request is the figure a busy machine distorts least: it does not depend on how much of the
    # core the server got, only on what each request cost it. 1e6 / µs is the req/s one whole core allows.
    sweep = {(r["server"], r["protocol"], r["batch"], r["concurrency"]): r for r in results.get("sweep", [])}
    for key, peak in peaks.items():
        server, protocol, batch = key.split("/")
        row = sweep.get((server, protocol, int(batch[1:]), peak["concurrency"]))
        if server == "kfkit" and row and row["server_cpu_us_per_req"]:
            ml_name, ml = best_mlserver(protocol, batch)
            ml_row = ml and sweep.get((ml_name, protocol, int(batch[1:]), ml["concurrency"]))
            summary[f"{batch}_{protocol}_server_us_per_req"] = round(row["server_cpu_us_per_req"], 1)
            if ml_row and ml_row["server_cpu_us_per_req"]:
                summary[f"{batch}_{protocol}_mlserver_us_per_req"] = round(ml_row["server_cpu_us_per_req"], 1)
                summary[f"{batch}_{protocol}_cpu_per_req_mlserver_over_kfkit"] = _ratio(
                    ml_row["server_cpu_us_per_req"], row["server_cpu_us_per_req"]
                )
    for row in results.get("open_loop", []):
        summary[f"open_loop_p99_ms/{row['server']}/{row['protocol']}"] = round(row["p99_ms"], 2)
    batching = {(r["server"], r["protocol"]): r for r in results.get("batching", [])}
    for server, model in (("kfkit", ""), ("kfkit-tf", "tensorflow/")):
        for protocol in ("v2-rest", "v2-grpc"):
            on, off = batching.get((server, protocol)), batching.get((f"{server}-nobatch", protocol))
            if on and off:
                summary[f"batching_speedup/{model}{protocol}"] = _ratio(on["req_per_s"], off["req_per_s"])
                summary[f"batching_p99_ms/{model}{protocol}"] = round(on["p99_ms"], 2)
    forward = results.get("forward_us", {})
    if "forward_b1" in forward:
        summary["forward_us_b1"] = round(forward["forward_b1"], 1)
        summary["forward_limit_req_per_s_b1"] = round(1e6 / forward["forward_b1"])
    return summary


# -------------------------------------------------------------------------------------- reporting


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def render_markdown(results: dict[str, Any]) -> str:
    """The results as markdown: machine, command, one table per measurement, the ratios."""
    machine = results["machine"]
    lines = [
        f"# Serving benchmark ({results['settings']['mode']}, {results['started']})",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cpus']} CPUs, {machine['memory_gib']} GiB; Python {machine['python']}, "
        f"torch {machine['torch']}; load generator: {machine.get('wrk') or 'asyncio client'} (REST), grpc.aio (gRPC); "
        f"git {machine['git']}. Load average before {results['loadavg_before']}, after {results.get('loadavg_after')}.",
        "",
    ]
    lines += [f"- NOTE: {note}" for note in results.get("notes", [])]
    if results.get("notes"):
        lines.append("")
    forward = results.get("forward_us")
    if forward:
        shown = ", ".join(
            f"{key.replace('_b', ' batch ')} {value:,.1f} µs ({1e6 / value:,.0f}/s)"
            for key, value in forward.items()
            if not key.endswith("_wall")
        )
        lines += [f"In-process on the server core, one thread, CPU time per call (the limit): {shown}", ""]
    header = (
        "| server | protocol | batch | conc. | req/s | rows/s | p50 ms | p95 ms | p99 ms | errors "
        "| server µs/req | server CPU | client CPU | runs (req/s) |"
    )
    rule = "|" + "---|" * 14

    def table(rows: list[dict]) -> list[str]:
        out = [header, rule]
        for r in rows:
            out.append(
                f"| {r['server']} | {r['protocol']} | {r['batch']} | {r['concurrency']} | {_fmt(r['req_per_s'])} "
                f"| {_fmt(r['rows_per_s'])} | {_fmt(r['p50_ms'], 2)} | {_fmt(r['p95_ms'], 2)} | {_fmt(r['p99_ms'], 2)} "
                f"| {r['errors']} | {_fmt(r['server_cpu_us_per_req'])} | {_fmt(r['server_cpu_share'], 2)} "
                f"| {_fmt(r['client_cpu_share'], 2)} | {', '.join(f'{x:,.0f}' for x in r['runs'])} |"
            )
        return out

    if results.get("sweep"):
        lines += ["## Concurrency sweep (closed loop, medians)", "", *table(results["sweep"]), ""]
    if results.get("open_loop"):
        fraction = results["settings"]["open_loop_fraction"]
        lines += [f"## Open loop at {fraction:.0%} of each server's batch-1 peak", "", *table(results["open_loop"]), ""]
    if results.get("batching"):
        lines += [
            "## Adaptive batching on (kfkit) vs off (kfkit-nobatch, max batch size 1); "
            "kfkit-tf: the same MLP as a TensorFlow SavedModel",
            "",
            *table(results["batching"]),
            "",
        ]
    if results.get("summary"):
        lines += ["## Ratios", "", "| figure | value |", "|---|---|"]
        lines += [f"| {key} | {_fmt(value, 2)} |" for key, value in results["summary"].items()]
        lines.append("")
    lines += [
        "server µs/req: server process CPU (utime+stime from /proc) over successful requests; server/client CPU: "
        "CPU seconds per wall second (near 1.00 means that side was saturated).",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ command line

_CLI_DOC = """Serving benchmark: kfkit's KServe server vs Seldon MLServer 1.7.1 vs the raw forward pass, side by side.

Publishes one 30→64→1 MLP, serves it with kfkit (V2 REST, V2 gRPC, V1 REST) and with MLServer (V2 REST and
gRPC; its own environment, .venv-mlserver; tuned and with its adaptive batching, ratios against its best),
pins the servers to one core and the load generator to another, sweeps concurrency for batch-1 and batch-64
requests with the servers alternated, measures latency at 70% of each peak (open loop) and batching on vs
off (the MLP, and the same MLP as a TensorFlow SavedModel), and writes results.json and results.md (medians
of the repeats, the command and the machine) into --out.
"""


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser(prog: str = "kfkit bench serve") -> argparse.ArgumentParser:
    """Options; every default comes from the chosen preset."""
    parser = argparse.ArgumentParser(
        prog=prog, description=_CLI_DOC, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument(
        "--quick",
        action="store_const",
        dest="preset",
        const="quick",
        help="a few seconds per server: what the test runs (batch 1, concurrency 4, 1 repeat)",
    )
    preset.add_argument(
        "--full",
        action="store_const",
        dest="preset",
        const="full",
        help="concurrency 1,4,16,64, 5 s runs, 3 repeats (about 20 minutes)",
    )
    parser.set_defaults(preset="short")
    parser.add_argument("--out", help="results folder (default .kfkit/bench/serve-<time>)")
    parser.add_argument("--concurrency", type=_ints, help="closed-loop concurrencies, e.g. 1,4,16,64")
    parser.add_argument("--batches", type=_ints, help="rows per request, e.g. 1,64")
    parser.add_argument("--duration", type=float, help="seconds per measured run")
    parser.add_argument("--repeats", type=int, help="runs per configuration (medians reported)")
    parser.add_argument(
        "--servers", type=_names, help="kfkit,mlserver,mlserver-batching[,mlserver-default] (default: all but the last)"
    )
    parser.add_argument("--protocols", type=_names, help="v2-rest,v2-grpc,v1-rest")
    parser.add_argument("--no-open-loop", action="store_true", help="skip the latency run at 70%% of peak")
    parser.add_argument("--no-batching", action="store_true", help="skip adaptive batching on vs off")
    parser.add_argument(
        "--batching-frameworks",
        type=_names,
        help="batching on vs off for the PyTorch MLP (always) and, with tensorflow (default), its SavedModel twin",
    )
    parser.add_argument("--no-forward", action="store_true", help="skip the in-process forward-pass timing")
    parser.add_argument("--no-wrk", action="store_true", help="use the asyncio REST client even if wrk is installed")
    parser.add_argument("--server-cpu", type=int, help="core for the servers (default 0)")
    parser.add_argument("--client-cpu", type=int, help="core for the load generator (default 1)")
    parser.add_argument("--mlserver-venv", help="MLServer environment (default .venv-mlserver)")
    parser.add_argument(
        "--kfkit-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for kfkit's server (repeat it), e.g. --kfkit-arg=--enable_latency_logging=false",
    )
    return parser  # fmt: skip


def main(argv: Sequence[str] | None = None, *, prog: str = "kfkit bench serve") -> int:
    """Run the benchmark from the command line and print the markdown report.

    Returns:
        0 on success, 1 if a server failed to start or answered wrongly (one line on stderr).
    """
    args = build_parser(prog).parse_args(argv)
    from kfkit.errors import KfkitError

    settings = PRESETS[args.preset]
    overrides = {
        "concurrencies": args.concurrency, "batches": args.batches, "duration_s": args.duration,
        "repeats": args.repeats, "servers": args.servers, "protocols": args.protocols,
        "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "mlserver_venv": args.mlserver_venv,
        "batching_frameworks": args.batching_frameworks,
    }  # fmt: skip
    settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    settings = replace(
        settings,
        open_loop=settings.open_loop and not args.no_open_loop,
        batching=settings.batching and not args.no_batching,
        forward=settings.forward and not args.no_forward,
        use_wrk=settings.use_wrk and not args.no_wrk,
        kfkit_args=[*settings.kfkit_args, *args.kfkit_arg],
    )
    out = Path(args.out or f".kfkit/bench/serve-{time.strftime('%Y%m%d-%H%M%S')}")
    command = " ".join([prog, shlex.join(sys.argv[1:] if argv is None else argv)]).strip()
    try:
        results = run_bench(settings, out, command=command)
    except KfkitError as e:
        print(f"bench_serve: error: {e}", file=sys.stderr)
        return 1
    print(render_markdown(results))
    print(f"results: {out / 'results.json'} and {out / 'results.md'}")
    return 0
