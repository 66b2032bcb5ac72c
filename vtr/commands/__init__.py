"""The `vtr` command groups, one module each (registered by vtr/cli.py)."""
