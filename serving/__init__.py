"""kfkit.serving."""
