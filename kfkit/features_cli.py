"""``kfkit features``: the Feast feature repository: apply, materialize, serve-check."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
The Feast feature repository that training and serving share (features.* config).

  apply        load the dataset, write its Parquet offline source (features and labels) into
               features.repo_path/data, generate the repository from config and register it (feast apply)
  materialize  load the latest row of each entity up to --end (default now) into the online store
               (features.online_store: sqlite in the repository, or redis at features.redis.*)
  serve-check  for features.check_sample entities, compare the offline row with the online lookup the
               transformer does, bit for bit; exit 1 on any difference. --prepared DIR (prep's output)
               compares against the rows the model trained on; without it, the point-in-time row
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``kfkit features`` on the top-level subcommand parser."""
    parser = sub.add_parser(
        "features",
        help="the Feast feature repository: apply, materialize, serve-check",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{apply,materialize,serve-check}")
    apply = actions.add_parser("apply", help="write the offline source, generate and register the repository")
    materialize = actions.add_parser("materialize", help="load the latest rows into the online store")
    materialize.add_argument("--end", help="ISO time to materialize up to (default now, UTC)")
    check = actions.add_parser("serve-check", help="offline (training) rows == online lookup, for a sample")
    check.add_argument("--sample", type=int, help="entities to compare (default features.check_sample)")
    check.add_argument("--prepared", help="prep's output folder: compare with its train.parquet (what the model saw)")
    for action in (apply, materialize, check):
        action.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="config overrides, KEY=VALUE")


def run(args: argparse.Namespace) -> int:
    """Run ``kfkit features``; returns the exit status.

    Raises:
        ConfigError: a bad override, a repository that cannot be opened or applied, an unreachable store.
        DatasetError: the dataset has no entity or timestamp column, or cannot be read.
    """
    from kfkit.cli import _compose  # the CLI's one way to compose (absolute paths, S3 environment)

    cfg = _compose(list(args.overrides))
    repo = Path(cfg.features.repo_path).expanduser().resolve()
    if args.action == "apply":
        return _apply(cfg, repo)
    if args.action == "materialize":
        return _materialize(repo, args.end)
    return _serve_check(repo, args.sample or cfg.features.check_sample, args.prepared)


def _apply(cfg: KfkitConfig, repo: Path) -> int:
    from kfkit.data.sources import load
    from kfkit.errors import DatasetError
    from kfkit.features.offline import write_offline_source

    if not (cfg.dataset.entity_column and cfg.dataset.timestamp_column):
        raise DatasetError(
            f"dataset={cfg.dataset.kind} has no entity_column/timestamp_column; Feast needs both "
            "(use dataset=synthetic_fraud, or set dataset.entity_column and dataset.timestamp_column)"
        )
    source = write_offline_source(load(cfg.dataset), cfg, repo / "data")
    print(f"applied {repo} (view {cfg.features.view!r}, online store {cfg.features.online_store}); source {source}")
    return 0


def _materialize(repo: Path, end: str | None) -> int:
    import pandas as pd

    from kfkit.errors import ConfigError
    from kfkit.features.repo import materialize

    until = None
    if end:
        try:
            until = pd.Timestamp(end, tz="UTC") if pd.Timestamp(end).tzinfo is None else pd.Timestamp(end)
        except ValueError as e:
            raise ConfigError(f"--end {end!r} is not a time; use ISO 8601, e.g. 2026-04-01T00:00:00Z") from e
        until = until.to_pydatetime()
    start, stop = materialize(repo, end=until)
    print(f"materialized {repo}: rows with event time in [{start.isoformat()}, {stop.isoformat()}]")
    return 0


def _serve_check(repo: Path, sample: int, prepared: str | None) -> int:
    import pandas as pd

    from kfkit.errors import DatasetError
    from kfkit.features.parity import serve_check

    training = None
    if prepared:
        path = Path(prepared).expanduser() / "train.parquet"
        try:
            training = pd.read_parquet(path)
        except (OSError, ValueError) as e:
            raise DatasetError(f"--prepared {prepared}: cannot read {path} ({e}); pass prep's output folder") from e
    report = serve_check(repo, sample=sample, training=training)
    print(report.summary())
    if report.stale:
        print(f"stale (past the ttl) online: {len(report.stale)} of {report.checked}, e.g. {report.stale[:5]}")
    return 0 if report.ok else 1
