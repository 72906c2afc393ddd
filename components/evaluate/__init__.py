"""The evaluate component."""

from kfkit.components.evaluate.component import evaluate

__all__ = ["evaluate"]
