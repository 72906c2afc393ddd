"""kfkit's benchmark harness: ``kfkit bench train|serve`` from a source checkout; not shipped in the wheel.

Modules, one job each: ``fixtures`` (the test model and its TensorFlow twin), ``payloads`` (request bytes),
``servers`` (kfkit, MLServer and bare gRPC server processes), ``load`` and ``wrk`` (load generators),
``forward_probe`` (the in-process forward pass, a program of its own), ``measure`` (runs and medians),
``run`` (the whole serving comparison), ``capacity`` and ``capacity_run`` (one replica's capacity at a
latency SLO, and the deploy keys it recommends), ``report`` (tables and markdown), ``settings`` (presets),
and the command lines ``serve``, ``train`` and ``grpc_floor`` (``python -m scripts.bench.<name>`` from the
checkout's root). ``mlserver_runtime`` and ``bare_grpc_server`` run in other processes and import nothing
from here.
"""
