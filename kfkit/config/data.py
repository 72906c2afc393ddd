"""Config groups for the data-prep engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfkit.config.schema import KfkitConfig

__all__ = ["DataConfig", "check"]


@dataclass
class DataConfig:
    """Data settings."""


def check(cfg: KfkitConfig) -> None:
    """Check this module's groups of ``cfg``.

    Raises:
        ConfigError: naming the key, the value, and what would be accepted.
    """
