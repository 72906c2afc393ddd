"""kfkit's exception hierarchy: one root, each error knows its HTTP status and says what to do."""

from __future__ import annotations

__all__ = [
    "KfkitError",
    "ConfigError",
    "DatasetError",
    "TrainingError",
    "RegistryError",
    "ModelLoadError",
    "InvalidInput",
    "ServingError",
    "PipelineError",
]


class KfkitError(Exception):
    """Root of every error kfkit raises on purpose.

    The message is meant for a person: it names the offending value and the fix.
    ``status_code`` is what a server answers when this error reaches a client.
    """

    status_code: int = 500


class ConfigError(KfkitError):
    """A configuration value is unknown, of the wrong type, or inconsistent."""

    status_code = 400


class DatasetError(KfkitError):
    """The input data is missing, unreadable, or does not match its schema."""

    status_code = 400


class TrainingError(KfkitError):
    """Training failed (a worker died, the loss diverged, no output was written)."""

    status_code = 500


class RegistryError(KfkitError):
    """A registry read or write failed: missing version, digest mismatch, version already exists."""

    status_code = 409


class ModelLoadError(KfkitError):
    """A model directory cannot be turned into a servable model."""

    status_code = 503


class InvalidInput(KfkitError):
    """A client sent a request kfkit cannot score: wrong shape, type, or feature names."""

    status_code = 400


class ServingError(KfkitError):
    """A local model server could not be started, or did not become ready."""

    status_code = 503


class PipelineError(KfkitError):
    """A pipeline step failed; the message names the step and where its log is."""

    status_code = 500
