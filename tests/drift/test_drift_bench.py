"""The drift benchmark harness (scripts/bench/drift.py): its interval and its command line.

Run from the checkout in a child process: with the root on this process's sys.path, the fixed top-level
folders would import as bare names too.
"""

import json
import subprocess
import sys


def test_wilson_interval_matches_the_textbook_values(repo):
    code = "import json; from scripts.bench.drift import wilson; print(json.dumps([wilson(30, 500), wilson(0, 100)]))"
    result = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (low, high), (zero_low, zero_high) = json.loads(result.stdout)
    assert (round(low, 4), round(high, 4)) == (0.0423, 0.0844)  # 6% of 500
    assert zero_low == 0.0 and round(zero_high, 3) == 0.037


def test_the_harness_runs_from_the_checkout(repo):
    result = subprocess.run([sys.executable, "-m", "scripts.bench.drift", "--help"], cwd=repo, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0 and "--mmd-windows" in result.stdout
