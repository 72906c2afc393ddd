"""The repository layout and the one import namespace."""

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

EXPECTED_PACKAGES = {
    "kfkit": "kfkit",
    "kfkit.pipelines": "pipelines",
    "kfkit.components": "components",
    "kfkit.serving": "serving",
    "kfkit.configs": "configs",
}


def test_top_level_layout():
    for name in ["pipelines", "components", "serving", "manifests", "helm", "configs", "tests", "scripts", "docs"]:
        assert (REPO / name).is_dir(), name
    for name in ["setup.cfg", "README.md", "Makefile", "pyproject.toml", ".ci/run"]:
        assert (REPO / name).is_file(), name


def test_package_dir_maps_one_namespace_one_level_deep():
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = [line.strip() for line in parser["options"]["package_dir"].strip().splitlines()]
    mapping = dict(line.replace(" ", "").split("=") for line in lines)
    assert mapping == EXPECTED_PACKAGES
    packages = {p.strip() for p in parser["options"]["packages"].split()}
    for package in packages:
        root = max((k for k in EXPECTED_PACKAGES if package == k or package.startswith(k + ".")), key=len)
        folder = REPO / EXPECTED_PACKAGES[root] / package[len(root) + 1 :].replace(".", "/")
        assert (folder / "__init__.py").is_file(), f"{package} -> {folder} has no __init__.py"
    # every folder with an __init__.py under a mapped root is listed, so none is left out of a wheel
    for package, folder in EXPECTED_PACKAGES.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).as_posix()
            name = package if rel == "." else f"{package}.{rel.replace('/', '.')}"
            assert name in packages, f"{name} ({init.parent}) is missing from setup.cfg packages"


def test_namespace_imports_and_bare_names_do_not(tmp_path):
    code = (
        "import importlib, kfkit.pipelines, kfkit.serving, kfkit.components, kfkit.configs\n"
        "for bare in ('pipelines', 'serving', 'components', 'configs'):\n"
        "    try:\n"
        "        importlib.import_module(bare)\n"
        "    except ModuleNotFoundError:\n"
        "        continue\n"
        "    raise SystemExit(f'{bare} is importable as a bare name')\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_cli_import_stays_light():
    code = (
        "import sys, kfkit.cli, kfkit.pipelines\n"
        "print(','.join(m for m in ('torch', 'tensorflow', 'kserve') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.slow
def test_wheel_carries_every_package_and_the_yaml_configs(tmp_path):
    """What the image installs (`pip install .`): every module of every mapped folder, every config group."""
    import shutil
    import zipfile

    # Built from a copy, so a stale build/ folder in the checkout cannot add modules that no longer exist.
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(".git", ".venv*", ".tools", "build", "dist", "*.egg-info", "__pycache__", ".kfkit")
    shutil.copytree(REPO, source, ignore=skip)
    command = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path)]
    subprocess.run([*command, str(source)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("kfkit-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"kfkit/configs/{p.relative_to(REPO / 'configs').as_posix()}" for p in (REPO / "configs").rglob("*.yaml")
    }
    for package, folder in EXPECTED_PACKAGES.items():
        prefix = package.replace(".", "/")
        for module in (REPO / folder).rglob("*.py"):
            if (module.parent / "__init__.py").is_file():  # a package module, not a stray script
                expected.add(f"{prefix}/{module.relative_to(REPO / folder).as_posix()}")
    assert len(expected) > 50, sorted(expected)  # the walk above found the tree
    assert expected <= names, sorted(expected - names)
    assert not [n for n in names if "/bench" in n or n.startswith(("scripts/", "tests/"))], "harness in the wheel"


STAGE_ROW = re.compile(r"^\| (\w+) \| `(components/\w+/)` \| `(kfkit/[\w/]+\.py)`")


def _stage_table() -> list[tuple[str, str, str]]:
    rows = [m.groups() for line in (REPO / "README.md").read_text().splitlines() if (m := STAGE_ROW.match(line))]
    assert rows, "README.md has no stage table (| stage | `components/<stage>/` | `kfkit/<module>.py` | ...)"
    return rows


def test_readme_stage_table_matches_the_tree():
    """One hop from a stage to its code: the README's stage -> component -> module table is true."""
    rows = _stage_table()
    stages = [stage for stage, _, _ in rows]
    components = sorted(p.parent.name for p in (REPO / "components").glob("*/component.py"))
    assert sorted(stages) == components, "every component folder is a row of the table, and no other"
    for stage, folder, module in rows:
        assert folder == f"components/{stage}/", (stage, folder)
        assert (REPO / module).is_file(), f"{stage}: {module} does not exist"
        dotted = module.removesuffix(".py").replace("/", ".")
        code = (REPO / folder / "component.py").read_text()
        assert f"from {dotted} import" in code, f"{folder}component.py does not call {dotted}"
