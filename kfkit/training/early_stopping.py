"""Early stopping on a validation score (higher is better), with the validation loss breaking ties."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["EarlyStopping"]


@dataclass
class EarlyStopping:
    """Tracks the best epoch and says when ``patience`` epochs in a row brought no improvement.

    An epoch improves on the best when its score is higher, or equal with a lower loss: on small
    validation splits PR-AUC often saturates at 1.0 within a few epochs, and the loss still tells
    a model that keeps getting more confident apart from one that has started to overfit.
    A NaN score (a validation split with one class) never improves on anything.
    """

    patience: int
    """Epochs without improvement before stopping; 0 turns early stopping off."""
    best_score: float = -math.inf
    best_loss: float = math.inf
    best_epoch: int = 0
    """1-based epoch of the best score so far (0 = none yet)."""
    bad_epochs: int = 0
    """Epochs since the last improvement."""

    @property
    def enabled(self) -> bool:
        """Whether stopping early is on at all."""
        return self.patience > 0

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` epochs in a row have not improved."""
        return self.enabled and self.bad_epochs >= self.patience

    def update(self, epoch: int, score: float, loss: float) -> bool:
        """Record one epoch's validation ``score`` and ``loss``; return whether it is the new best."""
        improved = not math.isnan(score) and (
            score > self.best_score or (score == self.best_score and loss < self.best_loss)
        )
        if improved:
            self.best_score, self.best_loss, self.best_epoch, self.bad_epochs = score, loss, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    def state_dict(self) -> dict[str, Any]:
        """Primitives only, for a checkpoint loaded with ``weights_only=True``."""
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for key, value in state.items():
            setattr(self, key, value)
