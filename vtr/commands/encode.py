"""`vtr encode ...` (moving here from extractors/encode_cli.py)."""
from extractors.encode_cli import register  # noqa: F401
