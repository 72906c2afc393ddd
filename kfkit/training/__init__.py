"""Training: the torchrun launcher and the DDP worker it starts."""
