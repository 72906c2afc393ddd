"""kfkit: a Kubeflow/KServe deployment kit, from raw data to a monitored KServe endpoint."""

__version__ = "0.1.0"

__all__ = ["__version__"]
