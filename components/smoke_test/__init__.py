"""The smoke_test component."""

from kfkit.components.smoke_test.component import smoke_test

__all__ = ["smoke_test"]
