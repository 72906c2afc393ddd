"""The drift detector service (``python -m kfkit.serving.drift``); runs in .venv-drift, contract in docs/drift.md.

Built at start-up from a registry version (its reference.parquet and config.json's ``drift`` section,
digests verified, nothing unpickled); takes KServe logger CloudEvents, tests windows off the request path
with alibi-detect 0.11.4 (TabularDrift, MMDDrift) or PSI, and posts drift CloudEvents to ``$K_SINK``.
Importing this package loads nothing: one module a job.

- :mod:`~kfkit.serving.drift.settings`: the ``drift`` settings, typed and checked (standard library only);
- :mod:`~kfkit.serving.drift.reference`: the version's reference rows, features and threshold;
- :mod:`~kfkit.serving.drift.detectors`: TabularDrift, MMDDrift, PSI, rebuilt from the reference;
- :mod:`~kfkit.serving.drift.decoding`: V1/V2 request and response bodies to arrays;
- :mod:`~kfkit.serving.drift.ingest`: CloudEvents in: validate, deduplicate, pair, buffer;
- :mod:`~kfkit.serving.drift.windows`: count and time windows, with overlap;
- :mod:`~kfkit.serving.drift.worker`: the test thread; results, reports, drift events;
- :mod:`~kfkit.serving.drift.report`: the HTML report of a drifted window;
- :mod:`~kfkit.serving.drift.feedback`: labels joined to predictions, rolling performance;
- :mod:`~kfkit.serving.drift.sink`: drift CloudEvents out, with Knative's retry rules;
- :mod:`~kfkit.serving.drift.metrics`: Prometheus text exposition;
- :mod:`~kfkit.serving.drift.state`: the open window and state across restarts (JSON and .npy);
- :mod:`~kfkit.serving.drift.service`: all of it for one version;
- :mod:`~kfkit.serving.drift.app`: the ASGI front.
"""
