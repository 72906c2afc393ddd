"""The benchmark harness lives in the checkout's scripts/bench, outside the wheel: import it from there."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Only for this import: with the root on sys.path the fixed top-level folders (serving, pipelines, ...)
# would import as bare names too. Once scripts.bench is loaded, its submodules resolve through its __path__.
sys.path.insert(0, str(REPO))
try:
    importlib.import_module("scripts.bench")
finally:
    sys.path.remove(str(REPO))
