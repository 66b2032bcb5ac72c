"""`vtr demo` (moving here from vtr/demo.py)."""
from vtr.demo import register  # noqa: F401
