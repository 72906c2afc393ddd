"""A ``kfp.Client`` with the auth a multi-user Kubeflow needs: the pod's projected token, or a token from a file.

In a pod, Kubeflow projects a service-account token with the audience ``pipelines.kubeflow.org`` at
``/var/run/secrets/kubeflow/pipelines/token`` (or ``$KF_PIPELINES_SA_TOKEN_PATH``); kfp's
``ServiceAccountTokenVolumeCredentials`` reads it again on every request, so the kubelet's refreshes are
picked up. From outside, a Kubernetes token (``kubectl create token ... --audience=pipelines.kubeflow.org``)
read from a file goes in as ``existing_token``. Either way it reaches the API as ``Authorization: Bearer``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfkit.errors import ConfigError

if TYPE_CHECKING:
    from kfkit.config import KfkitConfig

__all__ = ["KfpTarget", "connect", "projected_token_path", "TOKEN_ENV"]

TOKEN_ENV = "KFKIT_KFP_TOKEN"
"""Environment variable holding a bearer token (auth=auto uses it when no token file is configured)."""
_SA_TOKEN_ENV = "KF_PIPELINES_SA_TOKEN_PATH"  # kfp.client.KF_PIPELINES_SA_TOKEN_ENV, without importing kfp
_SA_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"


@dataclass(frozen=True)
class KfpTarget:
    """Where runs go: the API host, the namespace (explicit on every call), and how to authenticate."""

    host: str
    """KFP API URL."""
    namespace: str | None = None
    """Profile namespace (multi-user); None on a single-user KFP."""
    auth: str = "auto"
    """auto, in_pod, token or none (see ``kubeflow.auth``)."""
    token_file: str | None = None
    """File with a Kubernetes token, for auth=token (and auth=auto when set)."""
    ui_url: str | None = None
    """Base of run links; None: the host."""

    @classmethod
    def from_config(cls, cfg: KfkitConfig, *, host: str | None = None, namespace: str | None = None) -> KfpTarget:
        """The target ``cfg.kubeflow`` describes, with ``host`` and ``namespace`` (command-line flags) winning.

        Raises:
            ConfigError: no host given and ``kubeflow.host`` unset.
        """
        kf = cfg.kubeflow
        url = host or kf.host
        if not url:
            raise ConfigError("no Kubeflow Pipelines host: pass --host URL or set kubeflow.host=URL")
        return cls(url.rstrip("/"), namespace or kf.namespace, kf.auth, kf.token_file, kf.ui_url)

    def run_url(self, run_id: str) -> str:
        """The run's page in the KFP UI."""
        return f"{(self.ui_url or self.host).rstrip('/')}/#/runs/details/{run_id}"


def projected_token_path() -> Path:
    """Where kfp looks for the pod's projected service-account token."""
    return Path(os.environ.get(_SA_TOKEN_ENV) or _SA_TOKEN_PATH)


def connect(target: KfpTarget) -> Any:
    """A ``kfp.Client`` for ``target``, authenticated as ``target.auth`` says.

    Raises:
        ConfigError: auth=token and the token file is missing or empty; auth=in_pod and no projected token
            is mounted.
    """
    import kfp

    kwargs: dict[str, Any] = {"host": target.host}
    if target.namespace:
        kwargs["namespace"] = target.namespace
    kwargs.update(_auth_kwargs(target))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(**kwargs)


def _auth_kwargs(target: KfpTarget) -> dict[str, Any]:
    mode = target.auth
    if mode == "none":
        return {}
    if mode == "token" or (mode == "auto" and target.token_file):
        return {"existing_token": _read_token(target.token_file)}
    if mode == "auto" and (token := os.environ.get(TOKEN_ENV, "").strip()):
        return {"existing_token": token}
    path = projected_token_path()
    if path.is_file():
        from kfp.client.set_volume_credentials import ServiceAccountTokenVolumeCredentials

        return {"credentials": ServiceAccountTokenVolumeCredentials(str(path))}
    if mode == "in_pod":
        raise ConfigError(
            f"kubeflow.auth=in_pod but no projected token at {path}: mount a serviceAccountToken volume with "
            "audience pipelines.kubeflow.org there (or set $KF_PIPELINES_SA_TOKEN_PATH), or use kubeflow.auth=token"
        )
    return {}


def _read_token(token_file: str | None) -> str:
    if not token_file:
        raise ConfigError("kubeflow.auth=token needs kubeflow.token_file=PATH (or --token-file PATH)")
    path = Path(token_file).expanduser()
    try:
        token = path.read_text().strip()
    except OSError as e:
        raise ConfigError(
            f"kubeflow.token_file={token_file}: {e.strerror or e}; write a token there, e.g. "
            "kubectl -n NAMESPACE create token default-editor --audience=pipelines.kubeflow.org > FILE"
        ) from e
    if not token:
        raise ConfigError(f"kubeflow.token_file={token_file} is empty; it must hold a Kubernetes token")
    return token
