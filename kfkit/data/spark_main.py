"""The SparkApplication's driver program: prep with the Spark engine, as a local run does, on the shared claim.

spark-submit (run by the Spark Operator) starts it with the SparkSession's master and resources set;
:func:`kfkit.data.spark_prep.spark_session` reuses that session. A :class:`~kfkit.errors.DatasetError` is
written to :data:`kfkit.data.spark_job.ERROR_FILE` beside the output, so the prep step raises the same
message a local run would.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Prepare ``--config``'s dataset into ``--out`` with the Spark engine."""
    from kfkit.config import from_dict
    from kfkit.data.prep import prepare
    from kfkit.data.spark_job import ERROR_FILE
    from kfkit.errors import DatasetError

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="kfkit config as a JSON file")
    parser.add_argument("--out", required=True, help="folder for the prepared splits")
    args = parser.parse_args(argv)
    cfg = from_dict(json.loads(Path(args.config).read_text()))
    try:
        result = prepare(cfg.dataset, args.out, data=cfg.data, reference_rows=cfg.drift.reference_rows)
    except DatasetError as e:
        print(f"[prep] {e}", file=sys.stderr, flush=True)
        (Path(args.out).parent / ERROR_FILE).write_text(str(e) + "\n")
        return 1
    print(f"[prep] spark: {result.rows} rows, {len(result.feature_names)} features, positives {result.positives}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
