"""`vtr store ...` (moving here from storage/cli.py)."""
from storage.cli import register  # noqa: F401
