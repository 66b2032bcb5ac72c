"""AVIGATE + WAVER: the audio-gated video of AVIGATE fed into WAVER's tag injection,
token-wise interaction and distillation (neither seed has both).

The frames first go through AVIGATE's audio resampler and gated fusion transformer
(gates from [mean frame; mean audio query], silent videos masked); the fused frames
``mix * fused + (1 - mix) * (frames + position)`` then take WAVER's path: tags injected
(``distill="injection"``) or distilled by the KD loss (``"kd"``), an optional temporal
transformer (off by default: the fusion layers already run self-attention over the
frames), and WTI against the caption tokens. Loss: symmetric InfoNCE (+ KD, + DRL).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.heads.avigate import AvigateConfig, FusionLayer, ResamplerLayer
from training.heads.base import register_head
from training.heads.waver import WaverBase, WaverConfig


@dataclass
class AvigateWaverConfig(WaverConfig):
    temporal_layers: int = 0
    audio_dim: int = 768
    queries: int = 12
    resampler_layers: int = 4
    fusion_layers: int = 4
    gate_hidden: int = 256
    mix: float = 0.05  # AVIGATE's: fused = mix * fusion output + (1 - mix) * (frames + position)
    query_lr_scale: float = 100.0
    audio_zero_fill: bool = False

    def avigate(self) -> AvigateConfig:
        return AvigateConfig(dim=self.dim, audio_dim=self.audio_dim, n_heads=self.n_heads,
                             mlp_ratio=self.mlp_ratio, queries=self.queries, gate_hidden=self.gate_hidden,
                             max_frames=self.max_frames)


@register_head("avigate+waver")
class AvigateWaverHead(WaverBase):
    Config = AvigateWaverConfig
    base_video_fields = ("frames", "frame_mask", "audio", "has_audio")

    def __init__(self, config: AvigateWaverConfig):
        super().__init__(config)
        c, ac = config, config.avigate()
        self.audio_proj = nn.Linear(c.audio_dim, c.dim)
        nn.init.normal_(self.audio_proj.weight, std=c.audio_dim ** -0.5)
        nn.init.zeros_(self.audio_proj.bias)
        self.queries = nn.Parameter(torch.empty(c.queries, c.dim))
        nn.init.orthogonal_(self.queries)
        self.query_embedding = nn.Parameter(torch.randn(c.queries, c.dim) * 0.01)
        self.resampler = nn.ModuleList(ResamplerLayer(ac) for _ in range(c.resampler_layers))
        self.fusion_embedding = nn.Parameter(torch.randn(c.max_frames, c.dim) * 0.01)
        self.fusion = nn.ModuleList(FusionLayer(ac) for _ in range(c.fusion_layers))
        self._gates: dict[str, float] = {}

    def frame_features(self, batch, mask):
        frames = batch["frames"]
        f0 = frames + self.fusion_embedding[:frames.shape[1]]
        has = batch["has_audio"].to(frames.dtype)
        if self.config.audio_zero_fill:
            has = torch.ones_like(has)
        a = self.audio_proj(batch["audio"].to(frames.dtype))
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
        return self.config.mix * f + (1 - self.config.mix) * f0

    def param_groups(self, lr, weight_decay):
        groups = super().param_groups(lr, weight_decay)
        for g in groups:
            g["params"] = [p for p in g["params"] if p is not self.queries]
        groups.append({"params": [self.queries], "lr": lr * self.config.query_lr_scale,
                       "weight_decay": 0.0, "group": "queries"})
        return [g for g in groups if g["params"]]

    def extra_metrics(self):
        return {**super().extra_metrics(), **self._gates}
