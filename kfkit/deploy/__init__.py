"""The deploy stage: where a published version goes to serve (a local server process, the smoke test, the cluster)."""
