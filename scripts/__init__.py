"""Repository tools and the benchmark harness (scripts/bench); none of it is part of the kfkit wheel."""
