"""`vtr search`, `vtr index` (moving here from vtr/search.py)."""
from vtr.search import register  # noqa: F401
