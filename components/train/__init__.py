"""The train component."""

from kfkit.components.train.component import train

__all__ = ["train"]
