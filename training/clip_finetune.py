"""Fine-tune CLIP's last K blocks on cached hidden states (issue 26).

The store keeps the tokens entering CLIP's last blocks (``vtr extract --cache-clip-layers
K``: ``frame_hidden_j``, ``caption_hidden_j`` = the input of block L - j). ``ClipTail``
holds the top K blocks of each tower plus what follows them, loaded from the CLIP
weights file the store names:

* visual: blocks L-K..L-1, ``ln_post`` on every token, the CLS token ``@ proj``
  (= ``frame_features``);
* text: blocks L-K..L-1 under the causal mask, ``ln_final``, ``@ text_projection`` at
  every position, zero past EOT (= ``caption_tokens``; the EOT row = ``caption_embedding``).

``ClipFinetuneHead`` wraps a retrieval head: it reads the hidden states, runs the tail
and hands the head the features it reads today. The tail's parameters are saved with the
head (``head.safetensors``), so evaluating the run uses the fine-tuned layers.

Training may not open a checkpoint itself: the command reads the file and hands its
tensors here (``training.clip_init.ClipWeights``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import nn

from storage import read_attrs
from training.heads.base import Head, create_head, register_head
from training.runs import ConfigError

# ``--finetune-clip K`` replaces these batch keys of the wrapped head by the hidden states
_VIDEO_FROM_HIDDEN = ("frames",)
_TEXT_FROM_HIDDEN = ("text", "text_tokens")
# ``template``: these keys come from the template-wrapped captions instead
TEMPLATE_FIELDS = {"text": "text_template", "text_tokens": "text_template_tokens", "text_mask": "text_template_mask"}


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    """CLIP's pre-norm residual block, with CLIP's parameter names (so the key map is a
    prefix map)."""

    def __init__(self, width: int, quickgelu: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, width // 64, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU() if quickgelu else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class VisualTail(nn.Module):
    def __init__(self, k: int, width: int, dim: int, quickgelu: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, quickgelu) for _ in range(k))
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, dim))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[n, tokens, width]`` -> ``[n, dim]``."""
        x = hidden
        for b in self.blocks:
            x = b(x)
        return self.ln_post(x)[:, 0] @ self.proj


class TextTail(nn.Module):
    def __init__(self, k: int, width: int, dim: int, quickgelu: bool):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, quickgelu) for _ in range(k))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, dim))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, L, width]``, ``mask [n, L]`` (SOT..EOT) -> tokens ``[n, L, dim]`` (zero past
        EOT) and the EOT row ``[n, dim]``."""
        n_words = hidden.shape[1]
        causal = torch.full((n_words, n_words), float("-inf"), device=hidden.device).triu_(1)
        x = hidden
        for b in self.blocks:
            x = b(x, attn_mask=causal.to(x.dtype))
        x = self.ln_final(x) @ self.text_projection
        x = x * mask[..., None].to(x.dtype)
        eot = mask.long().sum(1).clamp(min=1) - 1
        return x, x[torch.arange(x.shape[0], device=x.device), eot]


def tail_key_map(k: int, visual_depth: int, text_depth: int) -> dict[str, str]:
    """``ClipTail`` parameter prefix -> CLIP state-dict prefix: our block j is CLIP's
    block L - K + j of each tower; then ``ln_post``/``proj`` and ``ln_final``/``text_projection``."""
    out = {}
    for j in range(k):
        out[f"visual.blocks.{j}."] = f"visual.transformer.resblocks.{visual_depth - k + j}."
        out[f"text.blocks.{j}."] = f"transformer.resblocks.{text_depth - k + j}."
    out.update({"visual.ln_post.": "visual.ln_post.", "visual.proj": "visual.proj",
                "text.ln_final.": "ln_final.", "text.text_projection": "text_projection"})
    return out


def _depth(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


class ClipTail(nn.Module):
    """The top K blocks of both CLIP towers and their output layers."""

    def __init__(self, k: int, visual_width: int, text_width: int, dim: int, quickgelu: bool,
                 visual_depth: int, text_depth: int):
        super().__init__()
        self.k, self.visual_depth, self.text_depth = k, visual_depth, text_depth
        self.visual = VisualTail(k, visual_width, dim, quickgelu)
        self.text = TextTail(k, text_width, dim, quickgelu)

    @classmethod
    def geometry(cls, state: Mapping[str, torch.Tensor]) -> dict:
        """The tail's sizes, read from a CLIP state dict."""
        for key in ("visual.proj", "text_projection", "visual.ln_post.weight", "ln_final.weight"):
            if key not in state:
                raise ConfigError(f"the CLIP weights have no {key} (--finetune-clip reads open_clip/OpenAI ViTs)")
        return {"visual_width": int(state["visual.ln_post.weight"].shape[0]),
                "text_width": int(state["ln_final.weight"].shape[0]),
                "dim": int(state["text_projection"].shape[1]),
                "visual_depth": _depth(state, "visual.transformer.resblocks."),
                "text_depth": _depth(state, "transformer.resblocks.")}

    def load_clip(self, state: Mapping[str, torch.Tensor]) -> list[str]:
        """Copy CLIP's tensors into every parameter (``tail_key_map``); a parameter the map
        leaves unfilled, or a shape that differs, raises ``ConfigError`` before any copy.
        Returns the CLIP keys read."""
        mapping = tail_key_map(self.k, self.visual_depth, self.text_depth)
        plan, problems = [], []
        for name, p in self.named_parameters():
            prefix = [ours for ours in mapping if name.startswith(ours)]
            if len(prefix) != 1:
                problems.append(f"{name}: no CLIP tensor mapped to it")
                continue
            theirs = mapping[prefix[0]] + name[len(prefix[0]):]
            if theirs not in state or tuple(state[theirs].shape) != tuple(p.shape):
                problems.append(f"{name} <- {theirs}: " + ("missing" if theirs not in state else
                                                          f"{tuple(state[theirs].shape)} vs {tuple(p.shape)}"))
                continue
            plan.append((p, theirs))
        if problems:
            raise ConfigError(f"CLIP weights do not fit the {self.k}-block tail: {len(problems)} problem(s), e.g. "
                              + "; ".join(problems[:3]))
        with torch.no_grad():
            for p, theirs in plan:
                p.copy_(state[theirs].to(p.dtype))
        return [t for _, t in plan]

    def frames(self, hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``[B, N, tokens, width]`` -> ``[B, N, dim]`` (zero in padded slots, as stored)."""
        valid = frame_mask.bool()
        feats = self.visual(hidden[valid])  # padded slots are not run
        out = feats.new_zeros((*hidden.shape[:2], feats.shape[-1]))
        out[valid] = feats
        return out

    def captions(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text(hidden, mask)


def hidden_fields(k: int) -> tuple[str, str]:
    """The batch keys (= store variables) a K-block tail reads."""
    return f"frame_hidden_{k}", f"caption_hidden_{k}"


@register_head("clip-finetune")
class ClipFinetuneHead(Head):
    """A retrieval head (``base``) fed by CLIP's fine-tuned last ``k`` blocks, and/or by
    the template-wrapped captions (``template``)."""

    @dataclass
    class Config:
        base: str = "meanpool"
        base_config: dict = field(default_factory=dict)
        k: int = 0                  # CLIP blocks fine-tuned (0: the stored features)
        template: bool = False      # read caption_template_* in place of caption_*
        tail: dict = field(default_factory=dict)  # ClipTail.geometry() + quickgelu

    def __init__(self, config: Config, base: Head | None = None):
        super().__init__(config)
        self.base = base if base is not None else create_head(config.base, config.base_config)
        self.tail = ClipTail(config.k, **config.tail) if config.k else None
        rename = {}
        if config.template:
            rename.update(TEMPLATE_FIELDS)
        if config.k:
            fh, ch = hidden_fields(config.k)
            rename.update({f: fh for f in _VIDEO_FROM_HIDDEN})
            rename.update({f: ch for f in _TEXT_FROM_HIDDEN})
        self._rename = rename

        def mapped(fields: tuple[str, ...], extra: tuple[str, ...]) -> tuple[str, ...]:
            out = tuple(dict.fromkeys(rename.get(f, f) for f in fields))
            return out + tuple(e for e in extra if e not in out) if any(f in rename for f in fields) else out

        b = self.base
        self.text_fields = mapped(b.text_fields, ("text_mask",) if config.k else ())
        self.video_fields = mapped(b.video_fields, ("frame_mask",))
        self.loss_fields = tuple(f for f in mapped(b.loss_fields, ()) if f not in self.text_fields + self.video_fields)

    def _expand(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The base head's keys, from the template captions and through the tail. The batch
        dict itself gains them too, so ``loss`` (a teacher's or margin's ``frames``) reads the
        fine-tuned outputs without running the tail again."""
        c = self.config
        if c.template:
            for ours, theirs in TEMPLATE_FIELDS.items():
                if theirs in batch:
                    batch[ours] = batch[theirs]
        if c.k:
            fh, ch = hidden_fields(c.k)
            if fh in batch and "frames" not in batch:
                batch["frames"] = self.tail.frames(batch[fh].float(), batch["frame_mask"])
            if ch in batch and "text" not in batch:
                batch["text_tokens"], batch["text"] = self.tail.captions(batch[ch].float(), batch["text_mask"])
        return batch

    def encode_text(self, batch):
        return self.base.encode_text(self._expand(batch))

    def encode_video(self, batch):
        return self.base.encode_video(self._expand(batch))

    def similarity(self, text_repr, video_repr):
        return self.base.similarity(text_repr, video_repr)

    def loss(self, sim, batch, text_repr, video_repr):
        return self.base.loss(sim, self._expand(batch), text_repr, video_repr)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The base head's groups; the tail's are added by the trainer at ``--clip-lr``."""
        return self.base.param_groups(lr, weight_decay)

    def index_vectors(self, video_repr):
        return self.base.index_vectors(video_repr)

    def extra_metrics(self):
        return self.base.extra_metrics()


def wrap_head(base: Head, k: int, template: bool, clip_state: Mapping[str, torch.Tensor] | None,
              quickgelu: bool) -> ClipFinetuneHead:
    """``base`` under a K-block tail loaded from ``clip_state`` (and/or the template)."""
    tail = {}
    if k:
        geo = ClipTail.geometry(clip_state)
        for tower in ("visual", "text"):
            if k > geo[f"{tower}_depth"]:
                raise ConfigError(f"--finetune-clip {k}: the CLIP {tower} tower has {geo[f'{tower}_depth']} blocks")
        tail = {**geo, "quickgelu": quickgelu}
    cfg = ClipFinetuneHead.Config(base=base.name, base_config=dataclasses.asdict(base.config), k=k,
                                  template=template, tail=tail)
    head = ClipFinetuneHead(cfg, base=base)
    if k:
        head.tail.load_clip(clip_state)
    return head




# --- what the store holds -----------------------------------------------------------------
def stored_clip_layers(store: str) -> int:
    """K of ``--cache-clip-layers`` the store was extracted with (0: none): the smaller of
    the frames' and the text's, counting only variables that are there."""
    from storage import open_group
    from storage.schema import MAX_CLIP_LAYERS

    group = open_group(store, mode="r")
    ks = []
    for kind in ("frame", "caption"):
        k = 0
        while k < MAX_CLIP_LAYERS and f"{kind}_hidden_{k + 1}" in group:
            k += 1
        ks.append(k)
    return min(ks)


def check_finetune(store: str, k: int) -> None:
    """Refuse, in one line, ``--finetune-clip k`` on a store that cannot feed it."""
    have = stored_clip_layers(store)
    if have == 0:
        raise ConfigError(f"--finetune-clip {k}: {store} holds no CLIP hidden states; extract it with "
                          f"`vtr extract --cache-clip-layers {k}`")
    if k > have:
        raise ConfigError(f"--finetune-clip {k} is more than the {have} block input(s) {store} holds "
                          f"(extracted with --cache-clip-layers {have})")
    prov = read_attrs(store).get("provenance", {})
    frames, text = prov.get("frames", {}), prov.get("text", {})
    if frames.get("weights_sha256") != text.get("weights_sha256"):
        raise ConfigError(f"{store}: frames and text come from different CLIP weights (sha256 "
                          f"{str(frames.get('weights_sha256'))[:16]} vs {str(text.get('weights_sha256'))[:16]}): "
                          "--finetune-clip needs one CLIP")


def quickgelu_of(store: str) -> bool:
    """Whether the store's CLIP uses QuickGELU (OpenAI's files load as ``*-quickgelu``)."""
    return str(read_attrs(store).get("provenance", {}).get("frames", {}).get("model", "")).endswith("quickgelu")


def template_of(store: str) -> str | None:
    """The caption template whose features the store holds (None: none)."""
    from storage import open_group

    if "caption_template_embedding" not in open_group(store, mode="r"):
        return None
    return read_attrs(store).get("provenance", {}).get("text", {}).get("caption_template")


def use_template(store: str, setting: str, log=print) -> bool:
    """``TrainConfig.template_captions``: off | auto (when the store has them; else one
    warning line) | on (refused without them)."""
    if setting == "off":
        return False
    template = template_of(store)
    if template is None:
        why = (f"{store} holds no template-wrapped captions (the release wraps every caption in "
               "\"This is a video about {}.\"; extract with --caption-template to match it)")
        if setting == "on":
            raise ConfigError(f"template_captions=on: {why}")
        log(f"warning: {why}; training on the raw captions")
        return False
    log(f"captions: the template {template!r} (store variables caption_template_*)")
    return True


__all__ = ["ClipFinetuneHead", "ClipTail", "check_finetune", "hidden_fields", "quickgelu_of", "stored_clip_layers",
           "tail_key_map", "template_of", "use_template", "wrap_head"]
