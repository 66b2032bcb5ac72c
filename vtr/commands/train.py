"""`vtr train`, `eval`, `ablate`, `report` (moving here from training/cli.py)."""
from training.cli import register  # noqa: F401
