#!/usr/bin/env python3
"""Serving benchmark, kfkit vs MLServer vs the raw forward pass (``kfkit bench serve``); see --help.

Usage: python scripts/bench_serve.py [--quick | --full] [--out DIR] [--servers kfkit,mlserver] ...
"""

from __future__ import annotations

import sys

from kfkit.serving.bench import main

if __name__ == "__main__":
    sys.exit(main(prog="python scripts/bench_serve.py"))
