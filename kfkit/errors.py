"""Every error kfkit raises on purpose, in one module: one root, and each class knows how it is answered.

Each class carries three codes, so every front answers the same failure the same way:

- ``status_code``: the HTTP status a server answers (with a JSON ``{"error": message}``);
- ``grpc_code``: the name of the ``grpc.StatusCode`` a gRPC service answers;
- ``exit_code``: the ``kfkit`` command's exit status (2 = the user's input, 3 = the gate said no, 1 = a
  failure of the run itself).

The message is meant for a person: it names the offending value and the fix. Only the standard library
is imported here, so the CLI and the drift service can import it cheaply.
"""

from __future__ import annotations

__all__ = [
    "KfkitError",
    "ConfigError",
    "DatasetError",
    "TrainingError",
    "RegistryError",
    "VersionNotFound",
    "InvalidName",
    "ModelLoadError",
    "InvalidInput",
    "EntityNotFound",
    "UpstreamError",
    "ServingError",
    "DeployError",
    "RolloutError",
    "PipelineError",
    "GateFailed",
    "GRPC_CODES",
]

GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    413: "RESOURCE_EXHAUSTED",
    415: "INVALID_ARGUMENT",
    422: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
"""The gRPC status for an HTTP status (the grpc-gateway mapping), for errors whose HTTP status varies."""


class KfkitError(Exception):
    """Root of every error kfkit raises on purpose.

    Attributes:
        status_code: HTTP status a server answers when this error reaches a client.
        grpc_code: Name of the ``grpc.StatusCode`` a gRPC service answers.
        exit_code: Exit status of the ``kfkit`` command that failed with it.
    """

    status_code: int = 500
    grpc_code: str = "INTERNAL"
    exit_code: int = 1


class ConfigError(KfkitError):
    """A configuration value is unknown, of the wrong type, or inconsistent (the user's input)."""

    status_code = 400
    grpc_code = "INVALID_ARGUMENT"
    exit_code = 2


class DatasetError(KfkitError):
    """The input data is missing, unreadable, or does not match its schema (the user's input)."""

    status_code = 400
    grpc_code = "INVALID_ARGUMENT"
    exit_code = 2


class TrainingError(KfkitError):
    """Training failed (a worker died, the loss diverged, no output was written)."""


class RegistryError(KfkitError):
    """A registry read or write failed: digest mismatch, version already exists, unreachable store."""

    status_code = 409
    grpc_code = "ALREADY_EXISTS"


class VersionNotFound(RegistryError):
    """The model, version or alias asked for does not exist (a user error: exit status 2 in the CLI)."""

    status_code = 404
    grpc_code = "NOT_FOUND"
    exit_code = 2


class InvalidName(RegistryError):
    """A model name, version or alias that cannot be one (``Prod``, ``01``): the user's input, exit status 2."""

    status_code = 400
    grpc_code = "INVALID_ARGUMENT"
    exit_code = 2


class ModelLoadError(KfkitError):
    """A model directory cannot be turned into a servable model."""

    status_code = 503
    grpc_code = "UNAVAILABLE"


class InvalidInput(KfkitError):
    """A client sent a request kfkit cannot score: wrong shape, type, feature names, or framing.

    The HTTP status is 400 unless the instance says otherwise (404 for another model's name, 413 for a
    body over the limit, ...); the gRPC code follows it.
    """

    status_code = 400
    exit_code = 2

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code

    @property
    def grpc_code(self) -> str:  # type: ignore[override]  # follows the instance's HTTP status
        """Name of the ``grpc.StatusCode`` for this error's HTTP status (INVALID_ARGUMENT, NOT_FOUND, ...)."""
        return GRPC_CODES.get(self.status_code, "INVALID_ARGUMENT")


class EntityNotFound(InvalidInput):
    """Entity ids with no (or incomplete, or expired) rows in the online feature store; answered 404."""

    status_code = 404

    def __init__(self, message: str, missing: list) -> None:
        super().__init__(message)
        self.missing = list(missing)


class UpstreamError(KfkitError):
    """The predictor behind a transformer refused a request (its 4xx, passed on) or could not be reached (502)."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code

    @property
    def grpc_code(self) -> str:  # type: ignore[override]
        """Name of the ``grpc.StatusCode`` for the upstream's HTTP status."""
        return GRPC_CODES.get(self.status_code, "UNAVAILABLE")


class ServingError(KfkitError):
    """A local model server could not be started, or did not become ready."""

    status_code = 503
    grpc_code = "UNAVAILABLE"


class DeployError(ServingError):
    """The cluster refused an object, or the InferenceService did not become Ready (the message says why)."""

    status_code = 502
    grpc_code = "UNAVAILABLE"
    exit_code = 1


class RolloutError(DeployError):
    """A rollout move is not possible in the current state (the message says which move is)."""


class PipelineError(KfkitError):
    """A pipeline step failed; the message names the step and where its log is."""


class GateFailed(KfkitError):
    """The candidate did not clear the gate, so it was neither published nor deployed."""

    status_code = 422
    grpc_code = "FAILED_PRECONDITION"
    exit_code = 3
