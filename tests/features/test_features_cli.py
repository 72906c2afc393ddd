"""`kfkit features apply|materialize|serve-check` from the command line's entry point."""

from __future__ import annotations

import pytest

from kfkit.cli import main

pytestmark = pytest.mark.slow  # feast takes seconds to import


def test_apply_materialize_serve_check(tmp_path, capsys):
    repo = tmp_path / "repo"
    common = ["dataset=synthetic_fraud", "dataset.n_rows=400", f"features.repo_path={repo}"]
    assert main(["features", "apply", *common, "+features.transforms.amount=log1p"]) == 0
    assert (repo / "feature_store.yaml").is_file() and (repo / "data" / "features.parquet").is_file()
    assert "applied" in capsys.readouterr().out
    # Nothing materialized yet: serve-check says so and fails.
    assert main(["features", "serve-check", *common, "--sample", "10"]) == 1
    assert "10 of 10 entities are not in the online store" in capsys.readouterr().out
    assert main(["features", "materialize", *common, "--end", "2026-06-01T00:00:00Z"]) == 0
    assert "2026-06-01T00:00:00+00:00" in capsys.readouterr().out
    assert main(["features", "serve-check", *common, "--sample", "10"]) == 0
    assert "parity ok: 10 entities" in capsys.readouterr().out


def test_bad_input_exits_2_naming_it(tmp_path, capsys):
    assert main(["features", "apply", f"features.repo_path={tmp_path / 'r'}"]) == 2  # breast_cancer: no entity
    assert "has no entity_column/timestamp_column" in capsys.readouterr().err
    assert main(["features", "materialize", f"features.repo_path={tmp_path / 'none'}"]) == 2
    assert "is not a kfkit feature repository" in capsys.readouterr().err
    assert main(["features", "apply", "features.online_store=memcached"]) == 2
    assert "features.online_store='memcached'" in capsys.readouterr().err
