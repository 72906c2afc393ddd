"""The deploy component."""

from kfkit.components.deploy.component import deploy

__all__ = ["deploy"]
