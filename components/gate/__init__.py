"""The gate component."""

from kfkit.components.gate.component import gate

__all__ = ["gate"]
