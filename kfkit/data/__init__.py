"""Data: the bundled and synthetic sources, schema checks, and the train/val/test split."""
