"""Typed configuration: the dataclass schemas kfkit owns, and composing them with Hydra.

YAML files under configs/ only select and override; every field, its type and its default live in
:mod:`kfkit.config.schema` and :mod:`kfkit.config.serving`. The composed config travels to pipeline
components as a plain dict and is re-validated there with :func:`from_dict`, so a component run on a
cluster checks exactly what a local run checks.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kfkit.config.schema import (
    BACKENDS,
    CONFIG_DIR,
    DATASET_KINDS,
    DEPLOY_TARGETS,
    DEVICES,
    FRAMEWORKS,
    PRECISIONS,
    THRESHOLD_RULES,
    TRAIN_LAUNCHERS,
    ClusterTrainingConfig,
    DatasetConfig,
    EvaluationConfig,
    GateConfig,
    KfkitConfig,
    ModelConfig,
    RegistryConfig,
    TrainingConfig,
)
from kfkit.config.serving import (
    SERVER_OPTIONS,
    DeployConfig,
    DriftConfig,
    RetrainConfig,
    ServingConfig,
    check_serving,
    server_flags,
)
from kfkit.errors import ConfigError

__all__ = [
    "DatasetConfig",
    "ModelConfig",
    "TrainingConfig",
    "ClusterTrainingConfig",
    "EvaluationConfig",
    "GateConfig",
    "RegistryConfig",
    "ServingConfig",
    "DriftConfig",
    "RetrainConfig",
    "DeployConfig",
    "KfkitConfig",
    "CONFIG_DIR",
    "compose",
    "from_dict",
    "to_dict",
    "validate",
    "SERVER_OPTIONS",
    "server_flags",
    "check_serving",
]


def _register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="kfkit_schema", node=KfkitConfig)


def compose(overrides: list[str] | None = None, config_dir: Path | None = None) -> KfkitConfig:
    """Compose configs/config.yaml with command-line overrides into a validated config.

    Args:
        overrides: Hydra overrides such as ``["training.epochs=3", "dataset=synthetic_fraud"]``.
        config_dir: Folder holding config.yaml and its groups; defaults to kfkit's configs/.

    Returns:
        The typed, interpolated and validated configuration.

    Raises:
        ConfigError: an override names an unknown key or group option, or a value has the wrong type.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    _register()
    directory = Path(config_dir or CONFIG_DIR).resolve()
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3", job_name="kfkit"):
            raw = hydra_compose(config_name="config", overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(_one_line(e)) from e
    return from_dict(OmegaConf.to_container(raw, resolve=False))


def from_dict(data: dict[str, Any]) -> KfkitConfig:
    """Validate a plain dict (as it travels between pipeline steps) against the schema.

    Raises:
        ConfigError: unknown key, wrong type, missing required value, or an invalid choice.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(KfkitConfig), _integral_floats_to_int(data))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_one_line(e)) from e
    assert isinstance(cfg, KfkitConfig)
    validate(cfg)
    return cfg


def to_dict(cfg: KfkitConfig) -> dict[str, Any]:
    """A JSON-ready dict of the config (what components receive).

    Keys whose value is None are left out: a kfp struct parameter cannot hold null, and every
    optional field defaults to None, so :func:`from_dict` restores them unchanged.
    """
    return _drop_none(dataclasses.asdict(cfg))


def _integral_floats_to_int(value: Any) -> Any:
    """Undo kfp turning ints into doubles: struct parameters are protobuf Structs (1000 -> 1000.0).

    OmegaConf refuses 1000.0 for an int field but takes 1000 for a float field, so integral floats
    become ints before validation.
    """
    if isinstance(value, dict):
        return {k: _integral_floats_to_int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_to_int(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def validate(cfg: KfkitConfig) -> None:
    """Check choices and ranges that a type alone does not catch.

    Raises:
        ConfigError: naming the key, the value, and what would be accepted.
    """
    _choice("dataset.kind", cfg.dataset.kind, DATASET_KINDS)
    _choice("model.framework", cfg.model.framework, FRAMEWORKS)
    _choice("training.backend", cfg.training.backend, BACKENDS)
    _choice("training.device", cfg.training.device, DEVICES)
    _choice("deploy.target", cfg.deploy.target, DEPLOY_TARGETS)
    _choice("training.precision", cfg.training.precision, PRECISIONS)
    _choice("training.cluster.launcher", cfg.training.cluster.launcher, TRAIN_LAUNCHERS)
    _choice("evaluation.threshold_rule", cfg.evaluation.threshold_rule, THRESHOLD_RULES)
    if cfg.dataset.kind == "csv" and not cfg.dataset.path:
        raise ConfigError("dataset=csv needs a file: pass dataset.path=/path/to/data.csv (or .parquet)")
    holdout = cfg.dataset.val_fraction + cfg.dataset.test_fraction
    if not (0 < cfg.dataset.val_fraction < 1 and 0 < cfg.dataset.test_fraction < 1 and holdout < 0.9):
        raise ConfigError(
            f"dataset.val_fraction={cfg.dataset.val_fraction} and dataset.test_fraction="
            f"{cfg.dataset.test_fraction} must each be in (0, 1) and leave at least 10% for training"
        )
    if not 0 < cfg.dataset.positive_rate < 1:
        raise ConfigError(f"dataset.positive_rate={cfg.dataset.positive_rate} must be in (0, 1)")
    _check_training_auto(cfg.training)
    for key, value in (
        ("dataset.n_rows", cfg.dataset.n_rows),
        ("training.cluster.num_nodes", cfg.training.cluster.num_nodes),
        ("evaluation.calibration_bins", cfg.evaluation.calibration_bins),
    ):
        if value < 1:
            raise ConfigError(f"{key}={value} must be at least 1")
    if not cfg.model.hidden_dims or min(cfg.model.hidden_dims) < 1:
        raise ConfigError(f"model.hidden_dims={cfg.model.hidden_dims} needs one or more positive widths")
    if not 0 <= cfg.model.dropout < 1:
        raise ConfigError(f"model.dropout={cfg.model.dropout} must be in [0, 1)")
    if not 0 < cfg.evaluation.threshold < 1:
        raise ConfigError(f"evaluation.threshold={cfg.evaluation.threshold} must be in (0, 1)")
    for key, value in (
        ("training.checkpoint_every_steps", cfg.training.checkpoint_every_steps),
        ("training.cluster.gpus_per_node", cfg.training.cluster.gpus_per_node),
        ("gate.max_regression", cfg.gate.max_regression),
    ):
        if value < 0:
            raise ConfigError(f"{key}={value} must not be negative")
    if not 0 < cfg.evaluation.target_precision < 1:
        raise ConfigError(f"evaluation.target_precision={cfg.evaluation.target_precision} must be in (0, 1)")
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", cfg.model.name) or len(cfg.model.name) > 63:
        raise ConfigError(
            f"model.name={cfg.model.name!r} is not a valid Kubernetes name: use lower-case letters, "
            "digits and '-', at most 63 characters (e.g. model.name=fraud-mlp)"
        )
    check_serving(cfg.serving)
    _check_drift(cfg.drift)
    from kfkit.config import cluster, data, features  # each section checks its own groups

    data.check(cfg.data)
    features.check(cfg.features)
    cluster.check(cfg.images, cfg.kubeflow)
    _check_across_groups(cfg)


def _check_across_groups(cfg: KfkitConfig) -> None:
    """Rules that join two groups: the data engine's and Feast's needs of the dataset and of training."""
    from kfkit.config.data import TRAINING_DATA

    _choice("training.data", cfg.training.data, TRAINING_DATA)
    if cfg.data.split_key is not None and cfg.data.split_key == cfg.dataset.label:
        raise ConfigError(f"data.split_key={cfg.data.split_key!r} is the label; name an id column, or leave it unset")
    if cfg.features.enabled and not (cfg.dataset.entity_column and cfg.dataset.timestamp_column):
        raise ConfigError(
            f"features.enabled=true needs an entity and a timestamp column, but dataset={cfg.dataset.kind} has "
            f"entity_column={cfg.dataset.entity_column!r} timestamp_column={cfg.dataset.timestamp_column!r}; "
            "use dataset=synthetic_fraud or set dataset.entity_column and dataset.timestamp_column"
        )


def _check_drift(drift: DriftConfig) -> None:
    """drift.* checks: the detector's own (one set of rules, so a config that passes here builds there)."""
    from kfkit.serving.drift.settings import DriftSettings

    DriftSettings.from_mapping(dataclasses.asdict(drift), where="drift")


# training.* keys that take "auto" or a number: (type, smallest value, what the number means).
_TRAINING_AUTO = {
    "epochs": (int, 1, "a whole number of epochs"),
    "batch_size": (int, 1, "a whole number of rows per process"),
    "learning_rate": (float, 0.0, "a positive learning rate"),
    "early_stopping_patience": (int, 0, "a whole number of epochs (0 = off)"),
    "nproc": (int, 1, "a whole number of processes"),
    "threads": (int, 1, "a whole number of threads per process"),
}


def _check_training_auto(training: TrainingConfig) -> None:
    """The training.* settings typed ``Any`` (auto or a number): check them, and make numbers numbers.

    kfp passes 1.0 as 1 (see :func:`_integral_floats_to_int`) and an ``Any`` field keeps what it gets, so
    a float setting becomes a float here; bools and numeric strings are refused, not guessed at.
    """
    for name, (kind, low, meaning) in _TRAINING_AUTO.items():
        value = getattr(training, name)
        if value == "auto":
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        whole = number and (kind is float or float(value).is_integer())
        if not whole or (value <= low if kind is float else value < low):
            bound = "above 0" if kind is float else f"at least {low}"
            raise ConfigError(f"training.{name}={value!r} must be auto or {meaning} ({bound})")
        setattr(training, name, kind(value))


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _one_line(error: Exception) -> str:
    """Hydra and OmegaConf put the useful part first and context on later lines; keep it short."""
    text = str(error).strip()
    cause = error.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text = f"{text}\n{str(cause).strip()}"
    parts: list[str] = []
    listing = False  # inside "Available options in 'dataset':" and the names under it
    for line in (line.strip() for line in text.splitlines()):
        if line.startswith("Config search path"):
            break  # where Hydra looked: noise to a user who mistyped an option
        if not line or line.startswith(_NOISE):
            continue
        if listing:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line
            continue
        parts.append(line)
        listing = line.endswith(":")
    if hint := _new_map_key_hint(text):
        parts.append(hint)
    return "; ".join(parts) + "; see `kfkit run --help` for the config groups and keys"


def _new_map_key_hint(text: str) -> str | None:
    """Hydra refuses a new key under a map field (gate.min_metrics.pr_auc=0.5) unless it starts with '+'.

    Its own advice is dropped as noise because it is wrong for typed fields, so give it back only where
    the parent really is a map (a ``dict[...]`` field of the schema).
    """
    import typing

    match = re.search(r"Could not override '([\w.]+)'", text)
    if not match or "." not in match.group(1):
        return None
    parent, _, _ = match.group(1).rpartition(".")
    node: Any = KfkitConfig
    for name in parent.split("."):
        if not dataclasses.is_dataclass(node) or name not in (hints := typing.get_type_hints(node)):
            return None
        node = hints[name]
    if typing.get_origin(node) is dict:
        return f"{parent} is a map: add a new key with a leading '+', e.g. +{match.group(1)}=VALUE"
    return None


# Hydra/OmegaConf lines that do not help: internals, and advice ("+key=value") a typed schema refuses.
_NOISE = ("object_type=", "reference_type=", "Set the environment", "To append to your config")
