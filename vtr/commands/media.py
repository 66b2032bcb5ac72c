"""`vtr media ...` (moving here from extractors/media_cli.py)."""
from extractors.media_cli import register  # noqa: F401
