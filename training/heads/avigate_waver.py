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

from dataclasses import dataclass, field

from training.heads.avigate import AudioFusionConfig, AudioGatedFusion
from training.heads.base import register_head
from training.heads.waver import WaverBase, WaverConfig


@dataclass
class AvigateWaverConfig(WaverConfig):
    temporal_layers: int = 0
    audio: AudioFusionConfig = field(default_factory=AudioFusionConfig)


@register_head("avigate+waver")
class AvigateWaverHead(AudioGatedFusion, WaverBase):
    Config = AvigateWaverConfig
    base_video_fields = ("frames", "frame_mask", "audio", "has_audio")

    def __init__(self, config: AvigateWaverConfig):
        super().__init__(config)
        self.build_audio_fusion(config)

    def frame_features(self, batch, mask):
        return self.audio_gated_frames(batch["frames"], mask, batch["audio"], batch["has_audio"])[0]

    def param_groups(self, lr, weight_decay):
        return self.with_query_group(super().param_groups(lr, weight_decay), lr)

    def extra_metrics(self):
        return {**super().extra_metrics(), **self._gates}
