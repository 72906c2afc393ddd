"""Kubeflow Pipelines components: thin ``@dsl.component`` wrappers around kfkit's stage functions.

Each folder holds one component. The body of a component only imports kfkit and calls one function,
so the same code runs in a unit test (``component.python_func(...)``), on kfp.local and in a pod.
"""

import os

__all__ = ["KFKIT_IMAGE"]

# The image every component runs in on a cluster: kfkit and its pinned dependencies (see Dockerfile).
KFKIT_IMAGE = os.environ.get("KFKIT_IMAGE", "ghcr.io/kfkit/kfkit:0.1.0")
