"""kfkit's Kubeflow pipelines: the training-to-serving pipeline, and running or compiling it."""
