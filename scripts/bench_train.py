#!/usr/bin/env python3
"""Training throughput benchmark, 1 vs 2 DDP processes (``kfkit bench train``); see --help."""

from __future__ import annotations

import sys

from kfkit.training.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python scripts/bench_train.py"))
