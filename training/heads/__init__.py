"""Retrieval heads on cached features, registered by name with a dataclass config.

``create_head("avigate", {"audio.fusion_layers": 2})`` builds a head; ``HEADS`` lists them. See the
package docstring (``training/__init__.py``) for the interface every head implements.
"""
from __future__ import annotations

from training.heads.base import HEADS, Head, create_head, head_config, head_option, head_options, register_head
from training.heads import avigate, avigate_waver, meanpool, waver  # noqa: F401,E402 - registers the heads

__all__ = ["HEADS", "Head", "create_head", "head_config", "head_option", "head_options", "register_head"]
