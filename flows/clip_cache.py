"""Issue 26: the frames and text steps' optional variables: CLIP hidden states
(``--cache-clip-layers K``) and template-wrapped captions (``--caption-template``).

Before a step writes them: the arrays are created (``storage.optional``), the extra disk
each needs is printed, and a run that would mix stores (some items with them, some
without, or another K) or that the disk cannot take is refused in one line.
"""
from __future__ import annotations

from storage import StepWriter, StoreError, layout_of
from storage.optional import check_free_space, create_optional, nbytes_per_item, present
from storage.schema import CLIP_HIDDEN_VARIABLES

_PRINTED: set[tuple[str, str]] = set()  # (store, step): the sizes are printed once per process


def _hidden_names(step: str, k: int) -> list[str]:
    kind = "frame" if step == "frames" else "caption"
    return [f"{kind}_hidden_{j}" for j in range(1, k + 1)]


def plan_optional(store: str, step: str, encoder, k: int, template: str | None = None,
                  storage_options: dict | None = None, log=print) -> tuple[tuple[str, ...], dict]:
    """``(variables, provenance extra)`` of the optional variables this run of ``step``
    writes, their arrays created. See the module doc for what is refused."""
    tower = "visual" if step == "frames" else "text"
    held = [n for n in present(store, step, storage_options) if n in CLIP_HIDDEN_VARIABLES]
    want = _hidden_names(step, k)
    if held and held != want:
        raise StoreError(f"{store}: its {step} step holds {', '.join(held)} (extracted with --cache-clip-layers "
                         f"{len(held)}), this run asks --cache-clip-layers {k}: give the store's value")
    depth = encoder.depth[tower]
    if k > depth:
        raise StoreError(f"--cache-clip-layers {k}: the CLIP {tower} tower has {depth} blocks")
    extra = ({"visual_token": encoder.visual_tokens, "visual_width": encoder.visual_width} if step == "frames"
             else {"text_width": encoder.text_width})
    names: dict[str, dict[str, int]] = {n: extra for n in want}
    attrs = {n: {"clip_layer": depth - j, "clip_depth": depth, "cache_clip_layers": k}
             for j, n in enumerate(want, start=1)}
    record: dict = {}
    if k:
        record["clip_hidden"] = {"k": k, "variables": want, "tower": tower,
                                 "layers": {n: depth - j for j, n in enumerate(want, start=1)},
                                 "meaning": "input of residual block `layer` (0-based), every token, fp16"}
    if step == "text":
        held_t = [n for n in present(store, step, storage_options) if n.startswith("caption_template_")]
        if held_t:
            from storage import read_attrs

            theirs = read_attrs(store, storage_options).get("provenance", {}).get("text", {}).get("caption_template")
            if template != theirs:
                raise StoreError(f"{store}: its text step holds captions wrapped in {theirs!r}, this run asks "
                                 f"--caption-template {template!r}: give the store's template")
        if template is not None:
            names.update({n: {} for n in ("caption_template_embedding", "caption_template_tokens",
                                          "caption_template_mask")})
            record["caption_template"] = template
    if not names:
        return (), record
    layout = layout_of(store, storage_options)
    sizes = {**layout.dim_sizes(), **extra}
    pending = StepWriter(store, step, storage_options=storage_options).pending().size
    if pending and (store, step) not in _PRINTED:
        _PRINTED.add((store, step))
        check_free_space(store, {n: pending * nbytes_per_item(n, sizes) for n in names}, log=log)
    create_optional(store, names, attrs, storage_options)
    return tuple(names), record
