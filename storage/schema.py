"""The feature store's schema: every variable, its dimensions, dtype and chunking.

The names here are a public contract (notebooks and the trainer read them), so a change
that renames or re-types a variable must bump ``SCHEMA_VERSION``.

Chunking is chosen for training reads and for ownership by writers:

* every per-video array is chunked by ``video_chunk`` videos (256 by default), so a
  "video block" of 256 videos is the unit a writer owns; ``frame_features`` then has
  3 MiB chunks (256 x 12 x 512 x 2 bytes);
* ``audio_tokens`` holds one video per chunk (1214 x 768 x 2 bytes = 1.8 MiB), which
  divides the video block, so a block's owner also owns its audio chunks;
* per-caption arrays are chunked by ``caption_chunk`` captions (256 by default):
  ``caption_tokens`` chunks are 256 x 32 x 512 x 2 bytes = 8 MiB.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# 2: the style step records completion in ``style_state``/``style_error`` (per style row) and
# the phrase table in ``phrase_state`` (per phrase), like every other step's items;
# ``storage.upgrade.upgrade_store`` converts a version-1 store in place.
# 3: every array carries the crc32c codec, and a done item's chunks are always on disk
# (storage.integrity); ``storage.upgrade`` rewrites a version-2 store's arrays.
SCHEMA_VERSION = 3
FORMAT_NAME = "vtr-zarr"

# Item states of every step (uint8 arrays named ``<step>_state``).
MISSING, DONE, FAILED = 0, 1, 2
STATE_NAMES = {MISSING: "missing", DONE: "done", FAILED: "failed"}

# How a store's test split is scored (attribute ``protocol``): single = one caption per
# video, square matrix; multi = several captions per video, CLIP4Clip's multi-sentence
# protocol (MSVD, VATEX); paragraph = one paragraph per video, scored like single.
PROTOCOLS = ("single", "multi", "paragraph")


@dataclass(frozen=True)
class StoreLayout:
    """Sizes of one store; fixed when the store is created."""

    n_videos: int
    n_captions: int
    # the default encoders' widths (ViT-B-32's embed_dim; the AST's 2 + 12 x 101 tokens of
    # hidden_size): storage imports no encoder, so a test holds these to open_clip's and
    # transformers' configs (tests/extractors/test_geometry.py); the heads' defaults read them
    n_frames: int = 12
    dim: int = 512
    n_audio_tokens: int = 1214
    audio_dim: int = 768
    # how the audio encoder laid out its tokens: special tokens first, then a
    # frequency x time grid of patches (the AST's 2 + 12 x 101); training reads these
    # rather than knowing the encoder
    audio_special_tokens: int = 2
    audio_freq_patches: int = 12
    audio_time_patches: int = 101
    n_words: int = 32
    n_tags: int = 30
    video_chunk: int = 256
    caption_chunk: int = 256

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "StoreLayout":
        return cls(**{k: int(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def dim_sizes(self) -> dict[str, int]:
        return {
            "video": self.n_videos,
            "caption": self.n_captions,
            "frame": self.n_frames,
            "dim": self.dim,
            "audio_token": self.n_audio_tokens,
            "audio_dim": self.audio_dim,
            "word": self.n_words,
            "tag": self.n_tags,
        }

    def chunk_for(self, dim_name: str, override: dict[str, int] | None = None) -> int:
        if override and dim_name in override:
            return override[dim_name]
        if dim_name == "video":
            return self.video_chunk
        if dim_name == "caption":
            return self.caption_chunk
        return self.dim_sizes()[dim_name]


@dataclass(frozen=True)
class VarSpec:
    dims: tuple[str, ...]
    dtype: str
    step: str  # the step whose writer owns this variable ("manifest" = written at creation)
    fill: object = 0
    # a table's planned column: written when the table is created (the rows' identity), not
    # by the step's items
    key: bool = False
    # per-dimension chunk overrides (audio_tokens: one video per chunk)
    chunks: dict[str, int] = field(default_factory=dict)
    doc: str = ""
    # written only when an extraction option asks for it (the array is created then, by
    # ``storage.optional.create_optional``); never required of a step's done items
    optional: bool = False


# The extraction steps, in the order they run, and the item dimension each one iterates
# over: the one list of steps (flows and the CLI derive theirs from it). Each has
# ``<step>_state`` and ``<step>_error`` arrays along that dimension; an item is finished
# exactly when its state is DONE or FAILED.
STEPS: dict[str, str] = {
    "probe": "video",
    "crawl": "video",
    "compress": "video",
    "frames": "video",
    "audio": "video",
    "text": "caption",
    "tags": "video",
    "style": "style_caption",
}
# Dimensions whose length is known only once a step has planned them (they are created
# with their table, see ``TABLES``).
PLANNED_DIMS = ("phrase", "style_caption")

VARIABLES: dict[str, VarSpec] = {
    # written at creation from the annotations
    "video": VarSpec(("video",), "str", "manifest", "", doc="video ids (the coordinate)"),
    "split": VarSpec(("video",), "str", "manifest", "",
                     doc="train | val | test | removed (no longer in the annotations)"),
    "video_path": VarSpec(("video",), "str", "manifest", "", doc="source file, relative to the data root"),
    "url": VarSpec(("video",), "str", "manifest", "", doc="where the video came from (audio crawl)"),
    "start_time": VarSpec(("video",), "float32", "manifest", float("nan"), doc="seconds, -1 if unknown"),
    "end_time": VarSpec(("video",), "float32", "manifest", float("nan"), doc="seconds, -1 if unknown"),
    "caption_text": VarSpec(("caption",), "str", "manifest", "", doc="the caption (or paragraph) as annotated"),
    "caption_video": VarSpec(("caption",), "int32", "manifest", -1, doc="index into `video`"),
    # probe
    "duration": VarSpec(("video",), "float32", "probe", float("nan"), doc="seconds"),
    "fps": VarSpec(("video",), "float32", "probe", float("nan"), doc="average frame rate"),
    "width": VarSpec(("video",), "int32", "probe", 0, doc="display width (after rotation)"),
    "height": VarSpec(("video",), "int32", "probe", 0, doc="display height (after rotation)"),
    "rotation": VarSpec(("video",), "int16", "probe", 0, doc="degrees from the container's side data"),
    "source_has_audio": VarSpec(("video",), "bool", "probe", False, doc="the original file has an audio stream"),
    # crawl
    "audio_source": VarSpec(("video",), "str", "crawl", "none", doc="original | crawled | none"),
    "audio_path": VarSpec(("video",), "str", "crawl", "", doc="file the audio features were taken from"),
    # compress
    "compressed_path": VarSpec(("video",), "str", "compress", "", doc="3 fps / short side 224 copy"),
    # frames
    "frame_features": VarSpec(("video", "frame", "dim"), "float16", "frames", 0,
                              doc="CLIP CLS after ln_post @ proj, one per sampled frame"),
    "frame_mask": VarSpec(("video", "frame"), "bool", "frames", False, doc="True where a frame was sampled"),
    # audio
    "audio_tokens": VarSpec(("video", "audio_token", "audio_dim"), "float16", "audio", 0,
                            chunks={"video": 1}, doc="AST last-layer tokens after the final LayerNorm"),
    "has_audio": VarSpec(("video",), "bool", "audio", False, doc="audio_tokens hold real audio"),
    # text
    "caption_embedding": VarSpec(("caption", "dim"), "float16", "text", 0, doc="EOT after ln_final @ text_projection"),
    "caption_tokens": VarSpec(("caption", "word", "dim"), "float16", "text", 0, doc="all token features, SOT..EOT"),
    "caption_mask": VarSpec(("caption", "word"), "bool", "text", False, doc="True for SOT..EOT"),
    # tags (the phrase table itself is created by the tags writer: its length is only
    # known after mining)
    "tag_index": VarSpec(("video", "tag"), "int32", "tags", -1, doc="top-K phrase indices per video"),
    "tag_score": VarSpec(("video", "tag"), "float16", "tags", 0, doc="cosine of phrase vs mean frame"),
}
_STATE_DOC = "0 missing, 1 done, 2 failed"
for _step, _item_dim in STEPS.items():
    if _item_dim in PLANNED_DIMS:
        continue
    VARIABLES[f"{_step}_state"] = VarSpec((_item_dim,), "uint8", _step, MISSING, doc=_STATE_DOC)
    VARIABLES[f"{_step}_error"] = VarSpec((_item_dim,), "str", _step, "",
                                          doc="why the item failed (on a done item: a warning about it)")
    # written by the flows after the step (storage.fingerprint), not by the step's items
    VARIABLES[f"{_step}_inputs"] = VarSpec((_item_dim,), "str", _step, "",
                                           doc="fingerprint of the inputs the item was made from")

# Variables the readers rely on; open_store refuses a store that lacks any of them.
REQUIRED = (
    "frame_features", "frame_mask", "audio_tokens", "has_audio", "audio_source",
    "caption_text", "caption_video", "caption_embedding", "caption_tokens", "caption_mask",
    "split",
) + tuple(f"{s}_state" for s, d in STEPS.items() if d not in PLANNED_DIMS)

# The phrase table of the tags step (mined from the training captions; one row per
# phrase). ``phrase_state`` marks the rows written: the table is complete when all are DONE.
PHRASE_VARIABLES: dict[str, VarSpec] = {
    "phrase_text": VarSpec(("phrase",), "str", "tags", "", key=True, doc="verb phrase mined from training captions"),
    "phrase_count": VarSpec(("phrase",), "int32", "tags", 0, key=True, doc="training captions holding it"),
    "phrase_embedding": VarSpec(("phrase", "dim"), "float16", "tags", 0,
                                doc='EOT of "This is a video about {phrase}."'),
    "phrase_state": VarSpec(("phrase",), "uint8", "tags", MISSING, doc=_STATE_DOC),
}


# The style step's items: each planned (caption, writing style) row, encoded by the store's
# CLIP text tower. The planned columns (source, style, text) are written when the table is
# created; the step then fills the encodings row by row like any step, with
# ``style_state``/``style_error`` per row.
STYLE_VARIABLES: dict[str, VarSpec] = {
    "style_caption_source": VarSpec(("style_caption",), "int32", "style", -1, key=True,
                                    doc="index into `caption` of the rewritten caption"),
    "style_caption_style": VarSpec(("style_caption",), "str", "style", "", key=True, doc="rewrite name"),
    "style_caption_text": VarSpec(("style_caption",), "str", "style", "", key=True, doc="the rewritten caption"),
    "style_caption_embedding": VarSpec(("style_caption", "dim"), "float16", "style", 0,
                                       doc="as caption_embedding, of the rewritten text"),
    "style_caption_tokens": VarSpec(("style_caption", "word", "dim"), "float16", "style", 0,
                                    doc="as caption_tokens"),
    "style_caption_mask": VarSpec(("style_caption", "word"), "bool", "style", False, doc="as caption_mask"),
    "style_state": VarSpec(("style_caption",), "uint8", "style", MISSING, doc=_STATE_DOC),
    "style_error": VarSpec(("style_caption",), "str", "style", "", doc="why the row failed"),
}

# Tables created by a step once it knows their length: dimension -> variables, and the
# state array that marks their rows written.
TABLES: dict[str, dict[str, VarSpec]] = {"phrase": PHRASE_VARIABLES, "style_caption": STYLE_VARIABLES}
TABLE_STATE = {"phrase": "phrase_state", "style_caption": "style_state"}

# Issue 26: optional variables of the frames and text steps.
# ``--cache-clip-layers K`` keeps CLIP's hidden states entering its last K residual blocks:
# ``frame_hidden_j`` / ``caption_hidden_j`` hold the tokens entering block L - j (the j-th
# block from the top, j = 1..K; L = the tower's depth), so fine-tuning the top K' <= K
# blocks reads one variable, ``*_hidden_{K'}``. The layer indices and K are also in the
# arrays' attributes and the steps' provenance. One video per chunk (0.9 MB for B/32) and
# 32 captions per chunk (1 MB): a training batch reads whole chunks of its own items.
MAX_CLIP_LAYERS = 4
HIDDEN_CAPTION_CHUNK = 32
CLIP_HIDDEN_VARIABLES: dict[str, VarSpec] = {}
for _j in range(1, MAX_CLIP_LAYERS + 1):
    CLIP_HIDDEN_VARIABLES[f"frame_hidden_{_j}"] = VarSpec(
        ("video", "frame", "visual_token", "visual_width"), "float16", "frames", 0, chunks={"video": 1},
        optional=True, doc=f"CLIP visual tokens entering residual block L-{_j} (--cache-clip-layers >= {_j})")
    CLIP_HIDDEN_VARIABLES[f"caption_hidden_{_j}"] = VarSpec(
        ("caption", "word", "text_width"), "float16", "text", 0, chunks={"caption": HIDDEN_CAPTION_CHUNK},
        optional=True, doc=f"CLIP text tokens entering residual block L-{_j} (--cache-clip-layers >= {_j})")
# ``--caption-template "This is a video about {}."``: the captions wrapped in the template
# (WAVER's --prompt_tuning), encoded beside the raw ones; the template is in the provenance.
TEMPLATE_VARIABLES: dict[str, VarSpec] = {
    "caption_template_embedding": VarSpec(("caption", "dim"), "float16", "text", 0, optional=True,
                                          doc="as caption_embedding, of the template-wrapped caption"),
    "caption_template_tokens": VarSpec(("caption", "word", "dim"), "float16", "text", 0, optional=True,
                                       doc="as caption_tokens, of the template-wrapped caption"),
    "caption_template_mask": VarSpec(("caption", "word"), "bool", "text", False, optional=True,
                                     doc="as caption_mask, of the template-wrapped caption"),
}

# Every variable a store may hold.
ALL_VARIABLES: dict[str, VarSpec] = {**VARIABLES, **PHRASE_VARIABLES, **STYLE_VARIABLES,
                                     **CLIP_HIDDEN_VARIABLES, **TEMPLATE_VARIABLES}


def step_variables(step: str) -> list[str]:
    """Data variables a step's items write (state, error and planned columns excluded)."""
    return [n for n, s in ALL_VARIABLES.items()
            if s.step == step and not s.key and not s.optional and STEPS.get(step) in s.dims
            and n not in (f"{step}_state", f"{step}_error", f"{step}_inputs")]


def schema_table(markdown: bool = False) -> str:
    """The store's variables as a table (name, dims, dtype, step, doc). In Markdown (the
    docs/store.md's table) each step's ``_state``/``_error`` pair shares one row."""
    rows = [(n, ", ".join(s.dims), s.dtype, s.step, s.doc) for n, s in ALL_VARIABLES.items()]
    head = ("variable", "dims", "dtype", "step", "doc")
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name, dims, dtype, step, doc in rows:
            if name.endswith("_error") and name[:-6] + "_state" in ALL_VARIABLES:
                continue  # listed with its state
            names = f"`{name}`"
            error = name[:-6] + "_error" if name.endswith("_state") else None
            if error in ALL_VARIABLES:
                names += f", `{error}`"
                dtype += " / " + ALL_VARIABLES[error].dtype
                doc += "; " + ALL_VARIABLES[error].doc
            lines.append(f"| {names} | {dims} | {dtype} | {step} | {doc.replace('|', '/')} |")
        return "\n".join(lines)
    widths = [max(len(r[k]) for r in (head, *rows)) for k in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]
                     for r in (head, *rows)).rstrip()
