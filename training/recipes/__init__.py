"""Training recipes: the releases' settings, one TOML file per recipe in this folder.

A recipe names its ``head`` and holds a ``[train]`` table (``TrainConfig`` fields) and an
``[options]`` table (head options, dotted as ``head_option`` resolves them); every value
carries a comment naming the release file and line it comes from. ``vtr train --recipe``
applies one under the command's flags and ``--set`` values.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field

from training.heads import head_option
from training.runs import ConfigError, TrainConfig

FOLDER = os.path.dirname(os.path.abspath(__file__))


@dataclass(frozen=True)
class Recipe:
    name: str
    head: str
    train: dict = field(default_factory=dict)
    head_options: dict = field(default_factory=dict)


def recipe_names() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(FOLDER) if f.endswith(".toml"))


def load_recipe(name: str) -> Recipe:
    """The recipe ``name``; an unknown name, or a key its head or ``TrainConfig`` does not
    have, is a ``ConfigError``."""
    known = recipe_names()
    if name not in known:
        raise ConfigError(f"unknown recipe {name!r} (known: {', '.join(known)})")
    path = os.path.join(FOLDER, name + ".toml")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    head, train, opts = raw["head"], raw.get("train", {}), raw.get("options", {})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(train) - fields) + sorted(k for k in opts if head_option(head, k) is None)
    if bad:
        raise ConfigError(f"{path}: no option(s) {bad} for head {head!r}")
    return Recipe(name, head, dict(train), dict(opts))


__all__ = ["FOLDER", "Recipe", "load_recipe", "recipe_names"]
