"""A publish that stops at a named point, prints READY and waits there to be killed (see test_gc.py).

Usage: python publish_child.py REGISTRY_URI ENDPOINT SOURCE_DIR NAME POINT

POINT: ``mid-copy`` (file://: two files copied into the staging folder), ``after-claim`` (s3://: the
claim written, no file uploaded), ``mid-upload`` (s3://: two files uploaded), ``after-commit`` (the
version committed, its audit log line not yet written).
"""

from __future__ import annotations

import shutil
import sys
import time


def _stop_here() -> None:
    print("READY", flush=True)
    time.sleep(600)


def main() -> None:
    """Publish SOURCE_DIR as NAME, stopping at POINT."""
    uri, endpoint, source, name, point = sys.argv[1:6]
    from kfkit.registry import open_registry

    registry = open_registry(uri, endpoint=endpoint or None, region="us-east-1")
    if point == "mid-copy":
        copytree, copied = shutil.copytree, []

        def copy(src, dst, **kwargs):
            copied.append(src)
            if len(copied) == 3:
                _stop_here()
            return shutil.copy2(src, dst, **kwargs)

        def slow_copytree(src, dst, symlinks=False, ignore=None, copy_function=None, *args, **kwargs):
            return copytree(src, dst, symlinks, ignore, copy, *args, **kwargs)  # recurses through shutil.copytree

        shutil.copytree = slow_copytree
    elif point == "after-commit":
        registry._append_audit = lambda *args, **kwargs: _stop_here()
    elif point in ("after-claim", "mid-upload"):
        client = registry._client
        put, calls = client.put_object, []

        def put_object(*args, **kwargs):
            calls.append(args)
            if len(calls) == (1 if point == "after-claim" else 3):
                _stop_here()
            return put(*args, **kwargs)

        client.put_object = put_object
    else:
        raise SystemExit(f"unknown point {point!r}")
    registry.publish(source, name=name)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
