"""The evaluate stage: metrics of a trained model on held-out rows (metrics.py) and their HTML report (report.py)."""
