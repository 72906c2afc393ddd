"""``python -m kfkit.serving.drift --model-uri URI``: build the detector from a registry version and serve it."""

from __future__ import annotations

import argparse
import logging
import sys

from kfkit.errors import KfkitError
from kfkit.serving.drift.settings import DETECTORS

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The command line (docs/drift.md); settings flags override the version's ``drift`` section."""
    parser = argparse.ArgumentParser(
        prog="python -m kfkit.serving.drift",
        description="Drift detector for one kfkit model version: takes KServe payload CloudEvents, tests "
        "windows with alibi-detect, posts drift CloudEvents to $K_SINK or --sink.",
    )
    parser.add_argument("--model-uri", required=True, help="registry version: file:///…/<name>/<version> or s3://…")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    parser.add_argument("--sink", default=None, help="URL drift events are POSTed to (default: drift.sink, $K_SINK)")
    parser.add_argument("--state-dir", default=None, help="where the open window, state and reports are kept")
    parser.add_argument("--public-url", default=None, help="base URL of report links (default http://HOST:PORT)")
    group = parser.add_argument_group("settings (override the version's config.json drift section)")
    group.add_argument("--detector", choices=DETECTORS, default=None)
    group.add_argument("--p-val", type=float, default=None)
    group.add_argument("--window-size", type=int, default=None, help="rows per window")
    group.add_argument("--window-seconds", type=float, default=None, help="time limit of a window (0: count only)")
    group.add_argument("--overlap", type=float, default=None, help="share of a window's rows reused by the next")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-bytes", type=int, default=8 << 20, help="bigger bodies get 413 (default 8 MiB)")
    limits.add_argument("--dedupe-capacity", type=int, default=100_000, help="(source, id, type) keys remembered")
    limits.add_argument("--backlog", type=int, default=8, help="closed windows queued for the test worker")
    limits.add_argument("--test-threads", type=int, default=1, help="torch threads of the tests (default 1)")
    limits.add_argument("--cache-dir", default=None, help="download folder of s3:// versions")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Build, then serve until SIGTERM/SIGINT (the open window is saved on the way out)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("kfkit.serving.drift")
    from kfkit.serving.drift.app import DriftApp
    from kfkit.serving.drift.service import DriftService

    overrides = {
        "detector": args.detector,
        "p_val": args.p_val,
        "window_size": args.window_size,
        "window_seconds": args.window_seconds,
        "overlap": args.overlap,
    }
    try:
        service = DriftService.from_uri(
            args.model_uri,
            overrides=overrides,
            sink=args.sink,
            state_dir=args.state_dir,
            public_url=args.public_url or f"http://{args.host}:{args.port}",
            dedupe_capacity=args.dedupe_capacity,
            backlog=args.backlog,
            cache_dir=args.cache_dir,
        )
    except KfkitError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    import torch
    import uvicorn

    torch.set_num_threads(max(1, args.test_threads))
    log.info(
        "drift detector for %s version %s: %s, window %d rows / %gs, sink %s",
        service.reference.model, service.reference.version, service.settings.detector,
        service.settings.window_size, service.settings.window_seconds, service.sink or "none",
    )  # fmt: skip
    app = DriftApp(service, max_body_bytes=args.max_body_bytes)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, lifespan="on", access_log=False, log_level="warning",
        timeout_graceful_shutdown=30,
    )  # fmt: skip
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
