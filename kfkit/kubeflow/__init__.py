"""Kubeflow Pipelines on a cluster: an authenticated kfp.Client; uploads, runs and recurring runs."""
