"""The prep component."""

from kfkit.components.prep.component import prep

__all__ = ["prep"]
