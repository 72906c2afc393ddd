"""Feast for training/serving parity: one feature repository feeds both; light on import (feast loads lazily).

One module a job:

- :mod:`kfkit.features.spec`: :class:`FeatureSpec` (``kfkit_features.json``), what the repository holds.
- :mod:`kfkit.features.repo`: the repository generated from config (``feature_store.yaml``, the entity, the
  feature view, the FeatureService), ``apply`` and ``materialize``.
- :mod:`kfkit.features.offline`: :func:`write_offline_source`, the Parquet source prep writes.
- :mod:`kfkit.features.training`: :func:`historical_frame`, training rows by point-in-time retrieval.
- :mod:`kfkit.features.preprocess`: :func:`preprocess`, the ONE function from stored values to model inputs.
- :mod:`kfkit.features.online`: :class:`OnlineFeatureLookup`, the transformer's lookup by entity id.
- :mod:`kfkit.features.staleness`: which online rows are past the view's TTL, and what is done with them.
- :mod:`kfkit.features.parity`: training rows against online rows, exactly (``kfkit features serve-check``).
"""
