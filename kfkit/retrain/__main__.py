"""``python -m kfkit.retrain --port 8091 [--state-dir DIR] OVERRIDES...``: run the retrain trigger."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from kfkit.errors import KfkitError

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Serve the trigger until SIGINT or SIGTERM; returns the exit status (2 for bad settings)."""
    parser = argparse.ArgumentParser(
        prog="python -m kfkit.retrain",
        description="Retrain trigger: takes drift CloudEvents (POST /), retrains on drift in retrain.min_drifted "
        "of the last retrain.window_span windows, once per burst, at most once per retrain.cooldown_s; "
        "GET /v1/retrain/status shows decisions and runs. docs/drift.md has the event format.",
    )
    parser.add_argument("--host", help="interface to bind (default serving.host)")
    parser.add_argument("--port", type=int, help="port (default retrain.port, 8091)")
    parser.add_argument(
        "--state-dir", help="state, run logs and (S3 registries) the audit (default WORK_DIR/drift/trigger)"
    )
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="kfkit config overrides, as for kfkit run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from kfkit.config import compose
        from kfkit.retrain.server import TriggerServer
        from kfkit.retrain.trigger import Trigger

        cfg = compose(args.overrides)
        state_dir = Path(args.state_dir or Path(cfg.work_dir) / "drift" / "trigger").expanduser().resolve()
        trigger = Trigger(cfg, args.overrides, state_dir)
        host = args.host or cfg.serving.host
        port = cfg.retrain.port if args.port is None else args.port
        try:
            server = TriggerServer(trigger, host, port)
        except OSError as e:
            raise KfkitError(f"cannot listen on {host}:{port}: {e}; pick another with --port or retrain.port") from e
    except KfkitError as e:
        print(f"kfkit retrain: error: {e}", file=sys.stderr)
        return e.exit_code

    def _stop(signum, frame):  # noqa: ARG001
        threading.Thread(target=server.shutdown, daemon=True).start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    retrain = cfg.retrain
    where = f"KFP {retrain.kfp_host}" if retrain.kfp_host else "kfkit run --no-serve on this machine"
    print(
        f"kfkit retrain: {cfg.model.name}: listening on {server.url} (retrain on drift in {retrain.min_drifted} of "
        f"the last {retrain.window_span} windows, cooldown {retrain.cooldown_s:g} s, runs via {where}"
        f"{', dry run' if retrain.dry_run else ''}); audit {trigger.audit.path}",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        trigger.stop()
    print("kfkit retrain: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
