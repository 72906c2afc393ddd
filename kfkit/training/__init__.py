"""Training: the launcher, the PyTorch DDP trainer its torchrun workers run, and the Keras trainer."""
