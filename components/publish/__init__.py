"""The publish component."""

from kfkit.components.publish.component import publish

__all__ = ["publish"]
