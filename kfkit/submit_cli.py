"""``kfkit submit``: compile the pipeline and submit a run to a Kubeflow Pipelines host."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit submit`` on the top-level subcommand parser."""
    parser = sub.add_parser("submit", help="compile the pipeline and submit a run to a Kubeflow Pipelines host")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="config overrides, KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    """Run ``kfkit submit``; returns the exit status."""
    raise NotImplementedError("kfkit submit")
