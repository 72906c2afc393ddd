"""In CI a test that needs a missing tool fails; on a laptop it skips and says what to install."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py").read_text()
TESTS = """
import pytest

def test_needs_helm():
    pytest.skip("missing tool: helm is not installed")

def test_needs_a_gpu():
    pytest.skip("needs a CUDA GPU")
"""


@pytest.mark.parametrize(("ci", "failed", "skipped"), [("true", 1, 1), ("", 0, 2)])
def test_missing_tool_fails_only_in_ci(pytester, monkeypatch, ci, failed, skipped):
    monkeypatch.setenv("CI", ci)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=failed, skipped=skipped)
    if failed:
        result.stdout.fnmatch_lines(["*missing tool: helm is not installed*CI=true*"])
