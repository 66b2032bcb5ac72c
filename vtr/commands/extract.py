"""`vtr extract` (moving here from flows/cli.py)."""
from flows.cli import register  # noqa: F401
