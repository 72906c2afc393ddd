"""Kubeflow Pipelines components: thin ``@dsl.component`` wrappers around kfkit's stage functions.

Each folder holds one component. The body of a component only imports kfkit and calls one function,
so the same code runs in a unit test (``component.python_func(...)``), on kfp.local and in a pod.
"""

from kfkit.config.cluster import DEFAULT_IMAGE

__all__ = ["KFKIT_IMAGE"]

# The image a component names before a pipeline is compiled: compiling sets every step's image from the
# config (images.main, see kfkit.pipelines.cluster), so the config, not the environment, decides it.
# kfp.local's SubprocessRunner ignores images.
KFKIT_IMAGE = DEFAULT_IMAGE
