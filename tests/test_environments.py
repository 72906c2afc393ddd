"""The second pinned environment (.venv-drift): alibi-detect 0.11.4 runs a real drift test there."""

import subprocess
from pathlib import Path

import pytest

from kfkit.data.sources import synthetic_fraud

DRIFT_PYTHON = Path(__file__).resolve().parents[1] / ".venv-drift" / "bin" / "python"

SCRIPT = """
import sys, alibi_detect, pandas as pd
from alibi_detect.cd import TabularDrift
ref, same, shifted = (pd.read_parquet(p).to_numpy(dtype="float32") for p in sys.argv[1:4])
detector = TabularDrift(ref, p_val=0.05)
flags = [detector.predict(x)["data"]["is_drift"] for x in (same, shifted)]
print(alibi_detect.__version__, *flags)
"""


@pytest.mark.slow
def test_drift_environment_detects_injected_drift(tmp_path):
    if not DRIFT_PYTHON.exists():
        pytest.fail(f"{DRIFT_PYTHON} is missing: run `make setup`")
    features = [f"v{i:02d}" for i in range(1, 29)] + ["amount", "hour"]
    synthetic_fraud(n_rows=1000, seed=1)[features].to_parquet(tmp_path / "ref.parquet")
    synthetic_fraud(n_rows=300, seed=2)[features].to_parquet(tmp_path / "same.parquet")
    synthetic_fraud(n_rows=300, seed=3, drift=0.5)[features].to_parquet(tmp_path / "shifted.parquet")
    result = subprocess.run(
        [str(DRIFT_PYTHON), "-c", SCRIPT, *(str(tmp_path / f"{n}.parquet") for n in ("ref", "same", "shifted"))],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    version, same_drift, shifted_drift = result.stdout.split()[-3:]
    assert version == "0.11.4"  # the last Apache-2.0 release
    assert same_drift == "0"
    assert shifted_drift == "1"


def test_main_environment_does_not_carry_alibi_detect():
    import importlib.util

    assert importlib.util.find_spec("alibi_detect") is None
