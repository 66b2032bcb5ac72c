"""CLIP4Clip's mean-pooling baseline on cached CLIP features.

Video = mean of the L2-normalised frame embeddings over valid frames, normalised again;
text = the normalised caption embedding; similarity = logit_scale * cosine. With
``adapter`` the two towers get a linear map each, initialised to the identity, so the
untrained head is exactly zero-shot CLIP and training learns a linear re-alignment (the
cached stand-in for CLIP4Clip's fine-tuning, which cannot touch the frozen encoders).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from storage.schema import StoreLayout
from training.heads.base import Head, register_head
from training.heads.layers import masked_mean


@dataclass
class MeanPoolConfig:
    dim: int = StoreLayout.dim  # the default store's (CLIP's embed_dim); a store's own fills it
    adapter: bool = True
    logit_scale: float = 100.0  # CLIP's trained value; fixed
    learn_scale: bool = False


@register_head("meanpool")
class MeanPoolHead(Head):
    Config = MeanPoolConfig

    def __init__(self, config: MeanPoolConfig):
        super().__init__(config)
        d = config.dim
        if config.adapter:
            self.text_proj = nn.Linear(d, d, bias=False)
            self.video_proj = nn.Linear(d, d, bias=False)
            for lin in (self.text_proj, self.video_proj):
                nn.init.eye_(lin.weight)
        else:
            self.text_proj = self.video_proj = nn.Identity()
        log_s = torch.tensor(math.log(config.logit_scale))
        if config.learn_scale:
            self.log_scale = nn.Parameter(log_s)
        else:
            self.register_buffer("log_scale", log_s)

    def encode_text(self, batch):
        return F.normalize(self.text_proj(batch["text"]), dim=-1)

    def encode_video(self, batch):
        f = F.normalize(batch["frames"], dim=-1)
        v = masked_mean(f, batch["frame_mask"])
        return F.normalize(self.video_proj(v), dim=-1)

    def similarity(self, text_repr, video_repr):
        return self.log_scale.exp() * text_repr @ video_repr.t()
