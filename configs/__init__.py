"""kfkit's Hydra configuration: config.yaml and one folder per config group (YAML only)."""
