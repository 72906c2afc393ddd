"""kfkit's Kubeflow pipeline (training to serving; a retrain run is the same pipeline): run here or compiled."""
