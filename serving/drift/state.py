"""The detector's state across restarts, in ``--state-dir``: JSON and ``.npy`` files, never a pickle.

Saved on shutdown, restored on start: the open (partial) window, the window counter (event ids stay
unique), recent (source, id, type) keys (a retry after a restart is still a duplicate), logged
predictions still waiting for labels, the labelled rows, collected output reference, counters of the
performance events, and the history of results and reports. State of another model version is ignored.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["save_state", "load_state", "STATE_FILE"]

STATE_FILE = "state.json"
_ARRAYS = ("rows", "times", "probabilities", "output_reference")
_log = logging.getLogger("kfkit.serving.drift")


def save_state(folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray | None]) -> None:
    """Write ``state.json`` and one ``<name>.npy`` per array; each file replaced atomically, JSON last."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        path = folder / f"{name}.npy"
        if array is None:
            path.unlink(missing_ok=True)
            continue
        tmp = folder / f".{name}.npy.tmp"
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, separators=(",", ":")))
    os.replace(tmp, folder / STATE_FILE)


def load_state(folder: Path, *, model: str, version: str, n_features: int) -> tuple[dict[str, Any], dict]:
    """The saved state of this model version, or empty dicts (nothing saved, another version, unreadable).

    Returns:
        The JSON state and the arrays (``rows``, ``times``, ``probabilities``, ``output_reference``).
    """
    path = folder / STATE_FILE
    if not path.is_file():
        return {}, {}
    try:
        state = json.loads(path.read_text())
        arrays = {}
        for name in _ARRAYS:
            if (folder / f"{name}.npy").is_file():
                arrays[name] = np.load(folder / f"{name}.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        _log.warning("%s is unreadable (%s); starting with an empty window", path, e)
        return {}, {}
    if state.get("model") != model or state.get("version") != version:
        _log.warning(
            "%s holds the state of %s version %s, not %s version %s; starting with an empty window",
            path, state.get("model"), state.get("version"), model, version,
        )  # fmt: skip
        return {}, {}
    rows = arrays.get("rows")
    if rows is not None and (rows.ndim != 2 or rows.shape[1] != n_features):
        _log.warning("%s: the saved window has shape %s, not [rows, %d]; dropped", path, rows.shape, n_features)
        arrays.pop("rows", None)
        arrays.pop("times", None)
    return state, arrays
