"""AVIGATE (CVPR 2025) on cached CLIP frame and AST audio features.

Audio tokens are projected to the CLIP width and summarised by a resampler (learnable
queries cross-attending the tokens); a gated fusion transformer lets frames attend to the
summary, with scalar tanh gates computed from [mean valid frame; mean audio query], so
a video whose audio does not help can switch it off. Similarity averages a global
(mean-frame) cosine and a masked logsumexp over per-frame cosines. Gates depend on video
and audio only: ``encode_video`` runs once per video at evaluation.

Our fixes to the release (../shared/reference/avigate.md): videos without audio
(``has_audio`` False) skip every audio cross-attention and give the gates a zero audio
summary (``audio.zero_fill`` feeds their all-zero tokens through instead, as the release
did); padded frames are masked in self-attention and in the logsumexp.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from storage.schema import StoreLayout
from training.heads.base import Head, register_head
from training.heads.layers import QuickGELU, layer_norm, masked_mean, mlp
from training.losses import adaptive_margin_loss, adaptive_margins, info_nce


@dataclass
class AudioFusionConfig:
    """AVIGATE's audio side (the ``audio.*`` options of ``avigate`` and ``avigate+waver``);
    the width, heads, MLP ratio and frame slots come from the head's own config."""
    dim: int = StoreLayout.audio_dim  # audio token width (the default store's: the AST's)
    queries: int = 12
    resampler_layers: int = 4
    fusion_layers: int = 4
    gate_hidden: int = 256
    mix: float = 0.05  # v = mix * fused + (1 - mix) * (frames + position)
    query_lr_scale: float = 100.0  # the release: 1e-2 for the queries, 1e-4 for the rest
    query_weight_decay: float = 0.0  # the release decays them at 0.2 (recipe avigate-msrvtt)
    zero_fill: bool = False  # the release: silent videos' all-zero tokens go through


@dataclass
class AvigateConfig:
    dim: int = StoreLayout.dim  # the default store's (CLIP's embed_dim); a store's own fills it
    n_heads: int = 8
    mlp_ratio: int = 4
    max_frames: int = StoreLayout.n_frames
    audio: AudioFusionConfig = field(default_factory=AudioFusionConfig)
    logit_scale: float = 100.0
    tau: float = 1.0
    loss: str = "margin"  # "margin" (AVIGATE's adaptive margin) or "infonce"
    margin_lambda: float = 0.2
    margin_delta: float = 0.1

    def __post_init__(self):
        if self.loss not in ("margin", "infonce"):
            raise ValueError(f"loss must be 'margin' or 'infonce', not {self.loss!r}")
        if self.dim % self.n_heads:
            raise ValueError(f"dim {self.dim} is not divisible by n_heads {self.n_heads}")


class Gate(nn.Module):
    """tanh(W2 QuickGELU(W1 u)): one scalar per video. W2 starts at zero, so the fusion
    starts closed and opens only as far as the loss asks."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(in_dim, hidden, bias=False)
        self.act = QuickGELU()
        self.w2 = nn.Linear(hidden, 1, bias=False)
        nn.init.zeros_(self.w2.weight)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w2(self.act(self.w1(u))))  # [B, 1]


class ResamplerLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, mlp_ratio: int):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = layer_norm(d), layer_norm(d), layer_norm(d)
        self.self_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.mlp = mlp(d, d * mlp_ratio)

    def forward(self, q: torch.Tensor, a: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        h = self.ln1(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        k = self.ln3(a)
        # every key of a silent video is masked: drop its cross-attention output instead
        # of a softmax over nothing (NaN)
        q = q + has[:, None, None] * self.cross_attn(self.ln3(q), k, k, need_weights=False)[0]
        return q + self.mlp(self.ln2(q))


class FusionLayer(nn.Module):
    def __init__(self, d: int, n_heads: int, mlp_ratio: int, gate_hidden: int):
        super().__init__()
        self.gate_mha, self.gate_ffn = Gate(2 * d, gate_hidden), Gate(2 * d, gate_hidden)
        self.ln1, self.ln2, self.ln3, self.ln4 = (layer_norm(d) for _ in range(4))
        self.cross_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.ffn = mlp(d, d * mlp_ratio, bias=False)  # the release's cross_ff has no biases
        self.self_attn = nn.MultiheadAttention(d, n_heads, batch_first=True)
        self.mlp = mlp(d, d * mlp_ratio)

    def forward(self, f, mask, a, a_summary, has):
        u = torch.cat([masked_mean(f, mask), a_summary], dim=-1)
        g_mha, g_ffn = self.gate_mha(u), self.gate_ffn(u)  # [B, 1]
        z = f + (g_mha * has[:, None]).unsqueeze(-1) * self.cross_attn(self.ln3(f), a, a, need_weights=False)[0]
        z = z + g_ffn.unsqueeze(-1) * self.ffn(self.ln4(z))
        h = self.ln1(z)
        h = z + self.self_attn(h, h, h, key_padding_mask=~mask, need_weights=False)[0]
        return h + self.mlp(self.ln2(h)), g_mha, g_ffn


class AudioGatedFusion:
    """AVIGATE's video side as a mixin of a ``Head``: audio tokens projected and summarised
    by the query resampler, then the gated fusion transformer mixes them into the frames
    (shared by ``avigate`` and ``avigate+waver``; the parameters keep the names
    ``audio_proj``, ``queries``, ``resampler``, ``frame_embedding``, ``fusion.N.gate_*``)."""

    def build_audio_fusion(self, c) -> None:
        """``c``: the head's config, with ``dim``, ``n_heads``, ``mlp_ratio``,
        ``max_frames`` and ``audio`` (an ``AudioFusionConfig``)."""
        a, d = c.audio, c.dim
        self.audio_proj = nn.Linear(a.dim, d)
        nn.init.normal_(self.audio_proj.weight, std=a.dim ** -0.5)
        nn.init.zeros_(self.audio_proj.bias)
        self.queries = nn.Parameter(torch.empty(a.queries, d))
        nn.init.orthogonal_(self.queries)
        self.query_embedding = nn.Parameter(torch.randn(a.queries, d) * 0.01)
        self.resampler = nn.ModuleList(ResamplerLayer(d, c.n_heads, c.mlp_ratio) for _ in range(a.resampler_layers))
        self.frame_embedding = nn.Parameter(torch.randn(c.max_frames, d) * 0.01)
        self.fusion = nn.ModuleList(FusionLayer(d, c.n_heads, c.mlp_ratio, a.gate_hidden)
                                    for _ in range(a.fusion_layers))
        self.fusion_config = a
        self._gates: dict[str, float] = {}

    def audio_gated_frames(self, frames: torch.Tensor, mask: torch.Tensor, audio: torch.Tensor,
                           has_audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mix * fused + (1 - mix) * f0, f0)`` with ``f0`` = frames + position. Silent
        videos are masked out of the audio attention unless ``audio.zero_fill`` (the release)."""
        f0 = frames + self.frame_embedding[:frames.shape[1]]
        has = has_audio.to(frames.dtype)
        if self.fusion_config.zero_fill:
            has = torch.ones_like(has)
        a = self.audio_proj(audio.to(frames.dtype))
        q = (self.queries + self.query_embedding).unsqueeze(0).expand(a.shape[0], -1, -1)
        for layer in self.resampler:
            q = layer(q, a, has)
        a_summary = q.mean(dim=1) * has[:, None]
        f, g_mha, g_ffn = f0, [], []
        for layer in self.fusion:
            f, gm, gf = layer(f, mask, q, a_summary, has)
            g_mha.append(gm.detach())
            g_ffn.append(gf.detach())
        if g_mha:
            self._gates = {"gate_mha_abs": float(torch.cat(g_mha).abs().mean()),
                           "gate_ffn_abs": float(torch.cat(g_ffn).abs().mean())}
        mix = self.fusion_config.mix
        return mix * f + (1 - mix) * f0, f0

    def with_query_group(self, groups: list[dict], lr: float) -> list[dict]:
        """The resampler queries in their own group: higher lr (AVIGATE), their own decay."""
        for g in groups:
            g["params"] = [p for p in g["params"] if p is not self.queries]
        groups.append({"params": [self.queries], "lr": lr * self.fusion_config.query_lr_scale,
                       "weight_decay": self.fusion_config.query_weight_decay, "group": "queries"})
        return [g for g in groups if g["params"]]


@register_head("avigate")
class AvigateHead(AudioGatedFusion, Head):
    Config = AvigateConfig
    video_fields = ("frames", "frame_mask", "audio", "has_audio")

    def __init__(self, config: AvigateConfig):
        super().__init__(config)
        self.build_audio_fusion(config)
        self.register_buffer("log_scale", torch.tensor(math.log(config.logit_scale)))

    # --- video side -------------------------------------------------------------------
    def encode_video(self, batch):
        frames, mask = batch["frames"], batch["frame_mask"].bool()
        # a video with no valid frame (never a done one) keeps slot 0 so softmaxes stay finite
        mask = mask.clone()
        mask[:, 0] |= ~mask.any(dim=1)
        n = frames.shape[1]
        if n > self.config.max_frames:
            raise ValueError(f"{n} frames per video, the head was built for {self.config.max_frames}")
        v, f0 = self.audio_gated_frames(frames, mask, batch["audio"], batch["has_audio"])
        v_hat = F.normalize(v, dim=-1)
        return {
            "frames": v_hat,
            "mask": mask,
            "global": F.normalize(masked_mean(v_hat, mask), dim=-1),
            # the margins' frozen video view: mean of normalised (frame + position)
            "frozen": F.normalize(masked_mean(F.normalize(f0.detach(), dim=-1), mask), dim=-1),
        }

    # --- text side and scores ---------------------------------------------------------
    def encode_text(self, batch):
        return F.normalize(batch["text"], dim=-1)

    def index_vectors(self, video_repr):
        return video_repr["global"]

    def similarity(self, text_repr, video_repr):
        s, tau = self.log_scale.exp(), self.config.tau
        s_g = s * text_repr @ video_repr["global"].t()
        local = torch.einsum("td,vnd->tvn", text_repr, video_repr["frames"]) * (tau * s)
        local = local.float().masked_fill(~video_repr["mask"][None], float("-inf"))
        s_l = torch.logsumexp(local, dim=-1) / tau
        return (s_g.float() + s_l) / 2

    def loss(self, sim, batch, text_repr, video_repr):
        if self.config.loss == "infonce":
            return info_nce(sim)
        m = adaptive_margins(batch["text"], video_repr["frozen"], self.config.margin_lambda,
                             self.config.margin_delta)
        return adaptive_margin_loss(sim, m, float(self.log_scale.exp()))

    def param_groups(self, lr, weight_decay):
        return self.with_query_group(super().param_groups(lr, weight_decay), lr)

    def extra_metrics(self):
        return dict(self._gates)
