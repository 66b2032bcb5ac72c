"""The step registry: every fact about an extraction step, written once.

``REGISTRY[name]`` is a ``StepSpec``: its scope (one task per owned store block, or one
over the whole store), the encoder it needs, its retries, the steps whose outputs it
reads (``after``: the dependency graph) and its writer function (``flows.steps``). What it
writes and the dimension of its items come from the store schema (``storage.schema``).

The graph is plain data: ``downstream(["frames"])`` names every step that reads what
frames writes, directly or not (``["tags", "validate"]``), so a changed item's later
steps can be redone; ``plan(steps)`` orders a selection.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from flows import steps as S
from flows.config import ALL_STEPS, ExtractConfig
from storage.schema import STEPS as ITEM_DIMS
from storage.schema import TABLES, step_variables


@dataclass(frozen=True)
class StepSpec:
    name: str
    scope: Literal["block", "store"]  # a task per owned block of items, or one over the store
    after: tuple[str, ...]            # steps whose outputs this one reads
    encoder: Literal["clip", "ast"] | None  # what it loads (a GPU on a Dask worker)
    writer: Callable[..., dict]       # flows.steps.write_<step>
    # its own inputs per item, fingerprinted with the ``after`` steps' (storage.fingerprint):
    # manifest variables by kind ("file": the source file's size and mtime)
    inputs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    retries: int = 0                  # extra attempts of a block that raised (network steps)
    retry_delay_s: float = 0.0

    @property
    def items(self) -> str | None:
        """The store dimension of its items (None: it writes none)."""
        return ITEM_DIMS.get(self.name)

    @property
    def writes(self) -> tuple[str, ...]:
        """The store variables it writes: its data, its tables, ``<step>_state``/``_error``.
        A block is one chunk of ``<step>_state`` (``storage.StepWriter.block_size``)."""
        if self.items is None:
            return ()
        tables = [n for t, vs in TABLES.items() for n, v in vs.items() if v.step == self.name]
        own = [f"{self.name}_state", f"{self.name}_error"]
        return tuple(dict.fromkeys([*step_variables(self.name), *tables, *own]))

    def run(self, store: str, cfg: ExtractConfig, indices: list[int] | None = None,
            on_error: Callable[[int, str], None] | None = None) -> dict:
        """The writer on ``indices`` (a block; None: every pending item), with its encoder."""
        args = [store, cfg]
        if self.encoder is not None:
            args.insert(1, ENCODERS[self.encoder](cfg.encoders(n_words=_n_words(store, cfg))))
        kw = {"on_error": on_error}
        if self.scope == "block":
            kw["indices"] = indices
        return self.writer(*args, **kw)


def _n_words(store: str, cfg: ExtractConfig) -> int:
    """CLIP's text context is the store's words per caption."""
    from storage import layout_of

    return layout_of(store, cfg.storage_options).n_words


ENCODERS = {"clip": S.clip_encoder, "ast": S.ast_encoder}

REGISTRY: dict[str, StepSpec] = {s.name: s for s in (
    StepSpec("probe", "block", (), None, S.write_probe,
             inputs={"path": ("video_path",), "file": ("video_path",)}),
    # the network may fail for a moment: a block is tried again after a pause
    StepSpec("crawl", "block", ("probe",), None, S.write_crawl, retries=2, retry_delay_s=5.0,
             inputs={"url": ("url",), "window": ("start_time", "end_time")}),
    StepSpec("compress", "block", ("probe",), None, S.write_compress),
    StepSpec("frames", "block", ("probe", "compress"), "clip", S.write_frames),
    StepSpec("audio", "block", ("probe", "crawl"), "ast", S.write_audio),
    StepSpec("text", "block", (), "clip", S.write_text, inputs={"caption": ("caption_text",)}),
    # mining needs every training caption and the style rows are few: one task each
    StepSpec("tags", "store", ("frames",), "clip", S.write_tags),
    StepSpec("style", "store", ("text",), "clip", S.write_style),
    StepSpec("validate", "store", tuple(ITEM_DIMS), None, S.validate_store),
)}
assert tuple(REGISTRY) == ALL_STEPS, "the registry lists the store's steps in run order"


def plan(steps: Iterable[str]) -> list[StepSpec]:
    """``steps`` in run order (an order in which every step follows those it reads)."""
    wanted = set(steps)
    return [s for s in REGISTRY.values() if s.name in wanted]


def downstream(steps: Iterable[str]) -> list[str]:
    """Every step that reads, directly or through others, what ``steps`` write (in run order,
    ``steps`` themselves excluded)."""
    changed = set(steps)
    out = []
    for s in REGISTRY.values():  # run order: a step's inputs come before it
        if s.name not in changed and changed & set(s.after):
            changed.add(s.name)
            out.append(s.name)
    return out


def encoders_needed(steps: Iterable[str]) -> set[str]:
    return {s.encoder for s in plan(steps) if s.encoder}
