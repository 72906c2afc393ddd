"""``kfkit features``: the Feast feature repository: apply, materialize, serve-check."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit features`` on the top-level subcommand parser."""
    parser = sub.add_parser("features", help="the Feast feature repository: apply, materialize, serve-check")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="config overrides, KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    """Run ``kfkit features``; returns the exit status."""
    raise NotImplementedError("kfkit features")
