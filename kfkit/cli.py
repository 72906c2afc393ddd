"""The ``kfkit`` command line: run the pipeline locally, serve a version, compile for a cluster.

About 500 lines, past the usual 400: one argparse parser with every subcommand's help, and a short
handler per subcommand that calls the module doing the work (the registry's commands live in
:mod:`kfkit.registry_cli`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

from kfkit import __version__
from kfkit.errors import GateFailed, KfkitError

__all__ = ["main", "build_parser", "EXIT_GATE_FAILED"]

EXIT_GATE_FAILED = GateFailed.exit_code
"""Exit status of `kfkit run` when the gate rejected the candidate (nothing published or deployed)."""

_OVERRIDES_HELP = (
    "Hydra overrides, KEY=VALUE or GROUP=OPTION, e.g. training.epochs=3 dataset=synthetic_fraud "
    "dataset.n_rows=100000 serving.http_port=9080"
)


def _config_epilog() -> str:
    from kfkit.config import CONFIG_DIR

    lines = ["config groups (pick one with GROUP=OPTION; defaults in configs/config.yaml):"]
    for group in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")):
        options = sorted(f.stem for f in group.glob("*.yaml"))
        if options:
            lines.append(f"  {group.name:<11} {', '.join(options)}")
    lines += [
        "",
        "every key is documented in kfkit/config/ (schema.py, serving.py);",
        "`kfkit config [OVERRIDES]` prints the composed config.",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kfkit",
        description="kfkit: Kubeflow Pipelines + KServe deployment kit. Train, evaluate, publish and serve a "
        "tabular model, on this machine (kfp.local) or on a Kubeflow cluster.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"kfkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser(
        "run",
        help="run the whole pipeline locally and serve the model",
        description="Run prep -> train (torchrun DDP) -> evaluate -> gate -> publish -> deploy -> smoke test on "
        "kfp.local, then keep the KServe endpoint up until Ctrl-C. The gate stops a candidate below gate.min_metrics "
        "or worse than the registry's production version on the same test rows.",
        epilog=f"{_config_epilog()}\n\nexit status: 0 served (or --no-serve done), 2 bad input, {EXIT_GATE_FAILED} "
        "the gate rejected the model (nothing published or deployed), 1 any other failure",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--no-serve", action="store_true", help="stop the model server once the smoke test passed")
    run.add_argument("--no-drift", action="store_true", help="serve without the drift detector and retrain trigger "
                     "(default: both run beside the predictor when .venv-drift exists; see `kfkit drift`)")  # fmt: skip
    run.add_argument(
        "--verbose",
        action="store_true",
        help="echo every step's output as kfp.local prints it (default: one line per step; all of it goes to "
        "the run's pipeline.log either way)",
    )
    run.add_argument("--summary-json", metavar="PATH", help="write the run summary (model, version, metrics, URLs)")
    run.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)

    serve = sub.add_parser(
        "serve",
        help="serve a published version with the KServe model server",
        description="Serve a registry version over KServe V1 REST, Open Inference Protocol V2 REST and V2 gRPC. "
        "The files are checked against the version's sha256 manifest before loading.",
    )
    serve.add_argument(
        "--model-uri", required=True, help="version URI printed by `kfkit run`, e.g. file:///…/registry/NAME/1"
    )
    serve.add_argument("--model-name", help="endpoint name (default: the name stored with the model)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    # KServe's spellings too (--http_port), as the model server and its messages use them
    serve.add_argument("--http-port", "--http_port", type=int, default=8080, help="REST port (default 8080)")
    serve.add_argument("--grpc-port", "--grpc_port", type=int, default=8081, help="V2 gRPC port (default 8081)")
    serve.add_argument(
        "--tfserving-grpc-port",
        "--tfserving_grpc_port",
        type=int,
        default=0,
        help="also answer TensorFlow Serving gRPC clients here (0 = off)",
    )
    serve.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="serving.* overrides, e.g. "
                       "serving.max_batch_size=64 serving.payload_log_url=http://127.0.0.1:9000/events")  # fmt: skip

    comp = sub.add_parser(
        "compile",
        help="compile the pipeline to IR YAML for Kubeflow Pipelines",
        description="Write the pipeline as KFP IR YAML, with the composed config as the default `config` parameter. "
        "Upload it in the Kubeflow Pipelines UI or with kfp.Client().create_run_from_pipeline_package.",
        epilog=_config_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp.add_argument("-o", "--output", default="kfkit-training.yaml", help="output file (default kfkit-training.yaml)")
    comp.add_argument(
        "--allow-local-paths",
        action="store_true",
        help="compile with a file:// registry and this machine's work_dir (only where every pod mounts them); "
        "without it, a file:// registry is refused: use registry=s3",
    )
    comp.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)

    manifest = sub.add_parser(
        "manifest",
        help="print the KServe ServingRuntime and InferenceService for a version",
        description="Print, as YAML, kfkit's ServingRuntime and an InferenceService serving STORAGE_URI "
        "(an S3/GCS/PVC copy of a published version), built from the deploy config group. "
        "Pipe it to `kubectl apply -f -` on a cluster with KServe installed.",
        epilog=_config_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = manifest.add_mutually_exclusive_group(required=True)
    what.add_argument("--storage-uri", help="s3://bucket/<prefix>/<name>/<version>/ (also gs://, pvc://)")
    what.add_argument(
        "--training-job",
        choices=["pytorchjob", "trainjob"],
        help="instead, print the Kubeflow PyTorchJob (Training Operator) or TrainJob (Trainer v2) the train step "
        "would submit for training.cluster.* (data and model on the shared claim kfkit-training)",
    )
    manifest.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)

    bench = sub.add_parser(
        "bench",
        help="benchmarks: training throughput, serving load test",
        description="`kfkit bench train`: samples/s of 1 vs 2 torchrun processes on 1M synthetic rows. "
        "`kfkit bench serve`: req/s and latency of kfkit's server (V1, V2 REST, V2 gRPC) vs MLServer 1.7.1 and "
        "the raw forward pass, pinned to one core each. `kfkit bench train --help` lists each one's options. "
        "The harness is in a source checkout's scripts/bench (not in the installed package). "
        "Method and results: docs/benchmarks.md.",
    )
    bench.add_argument("target", choices=["train", "serve"], help="which benchmark")
    bench.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own options (see its --help)")

    show = sub.add_parser(
        "config",
        help="print the composed config",
        description="Print the config a run would use, after applying overrides.",
        epilog=_config_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("overrides", nargs="*", metavar="OVERRIDE", help=_OVERRIDES_HELP)

    from kfkit import drift_cli, registry_cli

    registry_cli.add_parser(sub)
    drift_cli.add_parser(sub)
    from kfkit import deploy_cli, features_cli, submit_cli

    deploy_cli.add_parsers(sub)
    submit_cli.add_parser(sub)
    features_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``kfkit`` console script; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.args += extra  # the benchmark parses its own options
    elif args.command == "registry" and not any(a.startswith("-") for a in extra):
        args.args += extra  # operands and overrides given after an option (promote m 2 --reason x KEY=VALUE)
    elif args.command in ("deploy", "rollout", "submit") and not any(a.startswith("-") for a in extra):
        args.overrides += extra  # overrides given after an option (rollout start --version 2 KEY=VALUE)
    elif args.command == "drift" and not any(a.startswith("-") for a in extra):
        args.overrides += extra  # overrides given after an option (simulate work_dir=… --shift 1 dataset=…)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        commands = {"run": _run, "serve": _serve, "compile": _compile, "manifest": _manifest, "config": _show_config,
                    "registry": _registry, "bench": _bench, "drift": _drift}  # fmt: skip
        if args.command in ("deploy", "rollout"):
            from kfkit import deploy_cli

            commands |= {"deploy": deploy_cli.run_deploy, "rollout": deploy_cli.run_rollout}
        elif args.command in ("submit", "features"):
            from kfkit import features_cli, submit_cli

            commands |= {"submit": submit_cli.run, "features": features_cli.run}
        return commands[args.command](args)
    except KfkitError as e:
        command = f"{args.command} {args.action}" if args.command in ("registry", "drift", "rollout") else args.command
        print(f"kfkit {command}: error: {e}", file=sys.stderr)
        return e.exit_code  # 2: the user's input or a name that does not exist; 3: the gate said no
    except KeyboardInterrupt:
        print(f"kfkit {args.command}: interrupted", file=sys.stderr)
        return 130


def _compose(overrides: list[str]):
    from dataclasses import replace

    from kfkit.config import compose
    from kfkit.registry import root_path

    cfg = compose(overrides)
    # Steps run in other processes (and other directories on a cluster): pass absolute paths.
    work_dir = Path(cfg.work_dir).expanduser().resolve()
    registry = cfg.registry
    if registry.uri.startswith("file://") or "://" not in registry.uri:
        registry = replace(registry, uri=root_path(registry.uri).as_uri())
    # Every process this command starts (kfp.local steps, the model server) and every registry read in this
    # one must reach the same S3 store: an endpoint or region given as an override wins over the environment.
    for variable, value in (("AWS_ENDPOINT_URL", registry.endpoint), ("AWS_REGION", registry.region)):
        if value:
            os.environ[variable] = value
    if registry.endpoint:
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)  # read before AWS_ENDPOINT_URL by the S3 backend
    # features.repo_path was interpolated from the relative work_dir: make it absolute too.
    features = replace(cfg.features, repo_path=str(Path(cfg.features.repo_path).expanduser().resolve()))
    return replace(cfg, work_dir=str(work_dir), registry=registry, features=features)


def _preflight(cfg) -> None:
    """Fail in a second, not after training, on problems that are visible up front."""
    from kfkit.data.sources import dataset_file
    from kfkit.deploy.local import ensure_port_free
    from kfkit.errors import ConfigError
    from kfkit.gate import check_gate_config
    from kfkit.registry import open_registry, root_path

    check_gate_config(cfg.gate)
    registry = open_registry(cfg.registry.uri, endpoint=cfg.registry.endpoint, region=cfg.registry.region)
    if registry.uri.startswith("file://"):
        _check_writable(root_path(registry.uri), "registry.uri")  # not found at publish, after training
    else:
        registry.models()  # a wrong endpoint, missing bucket or bad credentials fail now, not after training

    if cfg.deploy.target != "local":
        raise ConfigError(
            f"deploy.target={cfg.deploy.target!r}: `kfkit run` serves on this machine (deploy=local); for a cluster "
            "use `kfkit manifest --storage-uri s3://…` or the helm chart in helm/kfkit"
        )
    if cfg.dataset.kind == "csv":
        dataset_file(cfg.dataset.path)
    ensure_port_free(cfg.serving.host, cfg.serving.http_port, "serving.http_port")
    ensure_port_free(cfg.serving.host, cfg.serving.grpc_port, "serving.grpc_port")


def _check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` if need be and write a file in it, or fail naming the key that chose it."""
    import tempfile

    from kfkit.errors import ConfigError

    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".kfkit-write-check-"):
            pass
    except OSError as e:
        raise ConfigError(
            f"{key}={folder.as_uri()} is not writable ({e.strerror or e}); publish would fail after training: "
            f"pick a folder you can write, e.g. {key}=file://{Path.cwd() / '.kfkit' / 'registry'}"
        ) from e


def _run(args: argparse.Namespace) -> int:
    from kfkit.deploy.local import LocalEndpoint, stop_server
    from kfkit.pipelines.local import run_local

    cfg = _compose(args.overrides)
    _preflight(cfg)
    loop = None
    if not (args.no_serve or args.no_drift):  # the detector and the trigger beside the predictor (kfkit.retrain.local)
        from kfkit.retrain.local import DriftLoop

        cfg, loop = DriftLoop.prepare(cfg, args.overrides)
    tc = cfg.training
    plan = ("training settings from the data's size" if "auto" in (str(tc.epochs), str(tc.nproc)) else
            f"{tc.epochs} epochs x {tc.nproc} process(es)")  # fmt: skip
    print(f"kfkit run: {cfg.model.name} on {cfg.dataset.kind}, {plan}; outputs in {cfg.work_dir}", flush=True)
    started = time.time()
    try:
        summary = run_local(cfg, verbose=args.verbose)
    except BaseException:
        _stop_servers_started_since(Path(cfg.work_dir), started)
        raise
    endpoint = LocalEndpoint.from_dict(summary["endpoint"])
    summary["seconds"] = round(time.time() - started, 1)
    with _StopSignals() as signals:  # from here on Ctrl-C means "stop serving", even while the loop starts
        if args.summary_json:
            Path(args.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
        _print_summary(summary)
        if args.no_serve:
            stop_server(endpoint)
            print("kfkit run: server stopped (--no-serve)")
            return 0
        try:
            if loop is not None and not signals.received:
                loop.start(summary)
            print("\nServing until Ctrl-C ...", flush=True)
            _wait_for_interrupt(endpoint.pid, signals, tick=loop.tick if loop else None)
        finally:
            endpoint = (loop.stop() if loop else None) or endpoint  # the loop may have moved to a newer version
            stop_server(endpoint)
    print("kfkit run: server stopped")
    return 0


def _print_summary(summary: dict) -> None:
    metrics = "  ".join(f"{k} {v:.4f}" for k, v in summary["test_metrics"].items())
    alias = f"  ({summary['promoted_to']})" if summary.get("promoted_to") else ""
    gate = summary.get("gate") or {}
    against = f", not worse than {gate['champion']}" if gate.get("champion") else ""
    gate_line = f"  gate      passed {gate.get('checks', 0)} checks{against}\n" if gate else ""
    print(
        f"\n{summary['model_name']} version {summary['version']}{alias}  ({summary['seconds']} s)\n"
        f"  registry  {summary['model_uri']}\n"
        f"  test      {metrics}  (threshold {summary['threshold']:.4f})\n"
        f"{gate_line}"
        f"  V1 REST   {summary['urls']['v1_predict']}\n"
        f"  V2 REST   {summary['urls']['v2_infer']}\n"
        f"  V2 gRPC   {summary['urls']['grpc']}\n"
        f"{_files_lines(summary.get('files', {}))}"
        f"\nTry it:\n  {summary['curl']}"
    )


def _files_lines(files: dict) -> str:
    """Where the report, the plots and the logs are, one line each."""
    lines = [
        ("report", files.get("report")),
        ("plots", "  ".join(files.get("plots", []))),
        ("run log", files.get("run_log")),
        ("server", files.get("server_log")),  # its log file
    ]
    return "".join(f"  {label:<10}{value}\n" for label, value in lines if value)


class _StopSignals:
    """SIGINT and SIGTERM set a flag while the block runs, whatever this process inherited.

    A process started in the background by a non-interactive shell inherits SIGINT as ignored, and Python
    then never raises KeyboardInterrupt, so Ctrl-C (or ``kill -INT``) would be lost and the server left
    running. Installed as soon as the pipeline is done, so a Ctrl-C while the drift loop starts counts too.
    """

    def __init__(self) -> None:
        self.received = False
        self._previous: dict = {}

    def __enter__(self) -> _StopSignals:
        def _handler(signum, frame):  # noqa: ARG001
            self.received = True

        self._previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _wait_for_interrupt(pid: int, signals: _StopSignals, tick=None) -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM, or until the server process exits on its own.

    ``tick()``, if given, is called every half second and returns the server's pid (the drift loop restarts
    the server when a retrained version is promoted).
    """
    import os

    while not signals.received:
        pid = tick() if tick else pid
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            print("kfkit run: the model server exited; see its log", file=sys.stderr)
            return
        time.sleep(0.5)
    print()


def _stop_servers_started_since(work_dir: Path, since: float) -> None:
    """A run that failed after deploy must not leave its server holding the ports."""
    from kfkit.deploy.local import LocalEndpoint, stop_server

    for path in (work_dir / "pipeline_root").glob("*/deploy/endpoint"):
        if path.is_file() and path.stat().st_mtime >= since:
            try:
                stop_server(LocalEndpoint.from_dict(json.loads(path.read_text())))
            except (ValueError, KeyError, OSError):
                continue


def _registry(args: argparse.Namespace) -> int:
    from kfkit.registry_cli import run

    return run(args)


def _drift(args: argparse.Namespace) -> int:
    from kfkit.drift_cli import run

    return run(args)


def _serve(args: argparse.Namespace) -> int:
    from kfkit.config import server_flags
    from kfkit.serving.server import main as serve_main

    serving = _compose(args.overrides).serving  # batching, body limit and payload logging from the config
    argv = ["--model-uri", args.model_uri, "--host", args.host]
    argv += ["--http_port", str(args.http_port), "--grpc_port", str(args.grpc_port)]
    argv += ["--tfserving-grpc-port", str(args.tfserving_grpc_port), *server_flags(serving)]
    if args.model_name:
        argv += ["--model-name", args.model_name]
    return serve_main(argv)


def _compile(args: argparse.Namespace) -> int:
    from kfkit.config import compose, to_dict
    from kfkit.pipelines.compile import check_cluster_paths, compile_pipeline, is_local_registry

    cfg = compose(args.overrides)
    check_cluster_paths(cfg, allow_local_paths=args.allow_local_paths)
    if is_local_registry(cfg):
        cfg = _compose(args.overrides)  # absolute paths, as on this machine
        print(f"kfkit compile: warning: the pipeline's defaults hold this machine's paths (registry.uri="
              f"{cfg.registry.uri}, work_dir={cfg.work_dir})", file=sys.stderr)  # fmt: skip
    out = compile_pipeline(args.output, to_dict(cfg))
    print(f"kfkit compile: wrote {out}")
    return 0


def _manifest(args: argparse.Namespace) -> int:
    from kfkit.deploy.inference_service import build_inference_service, build_serving_runtime, to_yaml

    cfg = _compose(["deploy=kserve", *args.overrides])
    if args.training_job:
        from kfkit.training.jobs import render_training_job

        print(render_training_job(cfg, args.training_job), end="")
        return 0
    docs = [build_serving_runtime(cfg), build_inference_service(cfg, storage_uri=args.storage_uri)]
    print(to_yaml(docs), end="")
    return 0


def _bench(args: argparse.Namespace) -> int:
    """Run scripts/bench/<target>.py of the source checkout this kfkit was installed from (``pip install -e``).

    The harness is not in the wheel; it is loaded from the checkout for this command only and nothing else
    in kfkit imports it.
    """
    import importlib

    root = Path(__file__).resolve().parents[1]
    harness = root / "scripts" / "bench"
    if not (harness / "__init__.py").is_file() or not (harness / f"{args.target}.py").is_file():
        print(
            f"kfkit bench {args.target}: error: the benchmarks are not part of the installed kfkit package "
            f"({harness} does not exist); run them from a kfkit source checkout: git clone it, `make setup`, "
            f"then `make bench` or `.venv/bin/kfkit bench {args.target}` there",
            file=sys.stderr,
        )
        return 2
    # The root only for this import: on sys.path it would also make serving, pipelines, ... bare names.
    # Once scripts.bench is loaded, its modules' own imports resolve through the package's __path__.
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(f"scripts.bench.{args.target}")
    finally:
        sys.path.remove(str(root))
    return module.main(args.args, prog=f"kfkit bench {args.target}")


def _show_config(args: argparse.Namespace) -> int:
    import dataclasses

    import yaml

    # Every key, empty ones as null: a user finds registry.endpoint or serving.payload_log_url here.
    print(yaml.safe_dump(dataclasses.asdict(_compose(args.overrides)), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
