"""What the detector is built from: a registry version's reference.parquet, model.json and config.json.

The version is resolved and checked by :func:`kfkit.registry.resolve` (file:// in place, s3:// fetched
to the cache through the MinIO SDK), so every byte matches the manifest's sha256 before it is read;
nothing is unpickled: parquet, JSON and the settings rebuild the detectors.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kfkit.errors import ConfigError, RegistryError
from kfkit.model.names import PROBABILITY
from kfkit.serving.drift.settings import DriftSettings

__all__ = ["Reference", "load_reference"]

_log = logging.getLogger("kfkit.serving.drift")
REFERENCE_FILE = "reference.parquet"
CONFIG_FILE = "config.json"
SPEC_FILE = "model.json"


@dataclass
class Reference:
    """A version's reference data and the facts the detector needs about its model."""

    uri: str
    """The version URI it was loaded from."""
    folder: Path
    """The verified local folder."""
    model: str
    """Model name (manifest)."""
    version: str
    """Version number (manifest)."""
    feature_names: list[str]
    """Features in the model's input order (model.json)."""
    threshold: float
    """Operating threshold: probability at or above which the model says 1 (model.json)."""
    rows: np.ndarray
    """float32 ``[n, n_features]`` reference rows."""
    probabilities: np.ndarray | None
    """Reference predictions (a ``probability`` column of reference.parquet), when published."""
    settings: DriftSettings
    """The version's ``drift`` settings (config.json), before command-line overrides."""
    categorical: list[int]
    """Indices of the features tested with chi-square."""


def load_reference(model_uri: str, *, cache_dir: str | Path | None = None) -> Reference:
    """Resolve, verify and read a registry version.

    Args:
        model_uri: ``file:///…/<name>/<version>``, a plain path, or ``s3://bucket/prefix/<name>/<version>/``
            (endpoint and credentials from $AWS_ENDPOINT_URL, $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY).
        cache_dir: Where s3:// versions are downloaded; None uses $KFKIT_CACHE_DIR or ~/.cache/kfkit.

    Raises:
        RegistryError: not a published version, a digest does not match, or reference.parquet or
            model.json is missing or unreadable.
        ConfigError: the drift section of config.json is invalid.
    """
    from kfkit.registry import resolve

    folder = resolve(model_uri, cache_dir=cache_dir)
    manifest = _json(folder / "manifest.json")
    spec = _json(folder / SPEC_FILE)
    names = spec.get("feature_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise RegistryError(f"{folder / SPEC_FILE} has no feature_names list; is {model_uri} a kfkit version?")
    config = _json(folder / CONFIG_FILE) if (folder / CONFIG_FILE).is_file() else {}
    if not config:
        _log.warning("%s has no %s: the detector uses the default drift settings", model_uri, CONFIG_FILE)
    settings = DriftSettings.from_mapping(config.get("drift"), where=f"{CONFIG_FILE} drift")
    rows, probabilities = _reference_rows(folder / REFERENCE_FILE, names)
    unknown = [n for n in settings.categorical_features if n not in names]
    if unknown:
        raise ConfigError(f"drift.categorical_features names {unknown}, which the model does not take ({names[:5]}…)")
    return Reference(
        uri=model_uri,
        folder=folder,
        model=str(manifest.get("name") or spec.get("name")),
        version=str(manifest.get("version", "")),
        feature_names=list(names),
        threshold=float(spec.get("threshold", 0.5)),
        rows=rows,
        probabilities=probabilities,
        settings=settings,
        categorical=[names.index(n) for n in settings.categorical_features],
    )


def _reference_rows(path: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    if not path.is_file():
        raise RegistryError(f"{path} is missing: the version was published without drift reference data")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path} is not readable parquet: {e}") from e
    if missing := [n for n in names if n not in frame.columns]:
        raise RegistryError(f"{path} lacks feature column(s) {missing[:5]} of model.json")
    try:
        rows = frame[names].to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"{path}: feature columns must be numeric ({e})") from e
    keep = np.isfinite(rows).all(axis=1)
    if not keep.all():
        _log.warning("%s: %d reference rows with missing or infinite values left out", path, int((~keep).sum()))
        rows = rows[keep]
    if rows.shape[0] < 2:
        raise RegistryError(f"{path} has {rows.shape[0]} usable rows; the tests need a reference sample")
    probabilities = None
    if PROBABILITY in frame.columns:
        probabilities = frame[PROBABILITY].to_numpy(dtype=np.float32)[keep]
    return rows, probabilities


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RegistryError(f"{path} is unreadable: {e}") from e
    if not isinstance(value, dict):
        raise RegistryError(f"{path} is not a JSON object")
    return value
