"""The benchmark harness sits outside the wheel: one folder, modules with one job each, nothing shipped imports it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HARNESS = REPO / "scripts" / "bench"
WHEEL_FOLDERS = ("kfkit", "serving", "pipelines", "components", "configs")  # setup.cfg's package_dir


def test_every_harness_module_is_small():
    for module in HARNESS.glob("*.py"):
        lines = len(module.read_text().splitlines())
        assert lines <= 400, f"{module.relative_to(REPO)} has {lines} lines"


def test_no_shipped_module_imports_the_harness():
    for folder in WHEEL_FOLDERS:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0:
                    names = [node.module or ""]
                for name in names:
                    assert not name.startswith(("scripts", "bench")), f"{path.relative_to(REPO)} imports {name}"
                    assert "bench" not in name.split("."), f"{path.relative_to(REPO)} imports {name}"


def test_harness_is_not_importable_from_an_installed_kfkit(tmp_path):
    code = (
        "import importlib\n"
        "for name in ('bench', 'scripts', 'scripts.bench', 'kfkit.serving.bench', 'kfkit.training.bench'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{name} is importable')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok"


def test_kfkit_bench_without_a_checkout_exits_2_and_says_where_to_run_it(monkeypatch, tmp_path, capsys):
    import kfkit.cli

    monkeypatch.setattr(kfkit.cli, "__file__", str(tmp_path / "site-packages" / "kfkit" / "cli.py"))
    assert kfkit.cli.main(["bench", "serve", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "not part of the installed kfkit package" in err and "source checkout" in err


@pytest.mark.parametrize("script", ["forward_probe.py", "bare_grpc_server.py"])
def test_child_programs_are_real_modules_run_by_path(script):
    """The forward probe and the bare gRPC server are files of their own, not programs inside strings."""
    source = (HARNESS / script).read_text()
    assert 'if __name__ == "__main__":' in source
    assert "from ." not in source and "scripts.bench" not in source.split('"""', 2)[2]


def test_forward_probe_refuses_wrong_arguments():
    result = subprocess.run(
        [sys.executable, "-P", str(HARNESS / "forward_probe.py")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "usage: forward_probe.py" in result.stderr
