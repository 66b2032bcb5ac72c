"""The extraction options: one typed object, ``ExtractConfig``, with each default written here
once. Both flows take it as their ``config`` parameter (Prefect shows its fields as the
deployment's parameter form), ``vtr extract`` generates its flags from its fields, and
every step reads its knobs from it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from extractors import crawl
from extractors.fbank import SHIFTS, FbankConfig
from storage.schema import STEPS, StoreLayout

# Every step in run order: the store's steps, then the final check.
ALL_STEPS: tuple[str, ...] = (*STEPS, "validate")
Step = Literal[ALL_STEPS]  # type: ignore[valid-type]  # built from the one list
MEDIA_STEPS = ("probe", "crawl", "compress")
MODEL_STEPS = tuple(s for s in STEPS if s not in MEDIA_STEPS)


@dataclass(frozen=True)
class EncoderSpec:
    """What the model steps need to build their frozen encoders (hashable: one per worker)."""

    clip_model: str
    clip_weights: str | None
    ast_weights: str | None
    ast_size: str
    random_init: bool
    device: str
    fbank_shift: str
    context_length: int  # CLIP's text context: the store's words per caption


class ExtractConfig(BaseModel):
    """Every option of an extraction run (the dataset and the store path aside)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clip_model: str = Field("ViT-B-32", description="ViT-B-32 or ViT-B-16 (extractors.encoders.CLIP_ENCODERS)")
    clip_weights: str | None = Field(None, description="OpenAI .pt, or open_clip .bin/.safetensors")
    ast_weights: str | None = Field(None, description="audioset_10_10_0.4593.pth or a Hugging Face folder")
    random_init: bool = Field(False, description="random encoder weights (tests, demos; flagged RANDOM-INIT)")
    ast_size: Literal["base", "tiny"] = Field("base", description="base (DeiT-base-384) or tiny (random weights only)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto | cpu | cuda")
    fbank_shift: Literal[SHIFTS] = Field(  # type: ignore[valid-type]
        FbankConfig.shift, description="fbank frame shift: AST's 10 ms, or fit the clip into 1024 frames")
    steps: list[Step] = Field(list(ALL_STEPS), description="steps to run (they run in the fixed order)")
    media_dir: str | None = Field(None, description="where compressed videos and crawled audio go "
                                                     "(default STORE.media; needed for a remote store)")
    allow_file_urls: bool = Field(False, description="let the crawl read file:// URLs")
    crawl_retries: int = Field(crawl.RETRIES, ge=0, description="extra attempts per URL, with back-off")
    crawl_timeout_s: float = Field(crawl.TIMEOUT_S, gt=0, description="wall-clock limit per crawl attempt, seconds")
    crawl_backoff_s: float = Field(crawl.BACKOFF_S, ge=0, description="wait before the first retry of a transient crawl failure, "
                                                          "seconds (doubled for each further retry)")
    keep_audio: bool = Field(False, description="keep the audio track in the compressed copies")
    workers: int | None = Field(None, ge=1, description="decode/fbank/compress worker processes per task "
                                                        "(default: the cores available, less one per GPU "
                                                        "the model steps use)")
    frame_batch_size: int = Field(64, ge=1, description="frames per CLIP batch (on CUDA: where the search "
                                                         "for the largest batch that fits starts)")
    audio_batch_size: int = Field(8, ge=1, description="clips per AST batch (on CUDA: where the search starts)")
    text_batch_size: int = Field(256, ge=1, description="captions per CLIP text batch")
    decode_timeout_s: float = Field(60.0, gt=0, description="per-video decode time bound, seconds")
    tag_min_count: int = Field(5, ge=1, description="a phrase needs this many training captions")
    video_chunk: int = Field(StoreLayout.video_chunk, ge=1, description="videos per store chunk = per task (new stores only)")
    gpu_per_worker: bool = Field(False, description="model tasks need a worker with resources GPU=1")
    lock_wait_s: float = Field(0.0, ge=0, description="wait this long for another run holding the store, "
                                                       "then refuse (0: refuse at once)")
    strict: bool = Field(False, description="inconsistent annotations are an error, not a warning")
    storage_options: dict | None = Field(None, description="fsspec options of a store or data root at a URL "
                                                           "(s3://...), as JSON, e.g. {\"key\": ..., \"secret\": ..., "
                                                           "\"client_kwargs\": {\"endpoint_url\": ...}}")
    scratch_dir: str | None = Field(None, description="local folder where each block copies its videos from a "
                                                      "data root at a URL (default: the system's temporary folder)")
    scratch_gb: float = Field(20.0, gt=0, description="most gigabytes of videos a block copies at once from a "
                                                      "data root at a URL (more: it works through them in turns)")
    dataset_options: dict[str, Any] = Field(
        {}, description="the dataset reader's options, key=value (n_val, seed, video_dir, youtube_url, "
                        "train_list: see extractors.datasets; each reader takes its own)")
    n_val: int | None = Field(None, ge=0, description="validation videos: held out of the training split (default "
                                                      "500), or drawn from the release's val list (default all); 0: "
                                                      "train on the release's full training split, the last epoch "
                                                      "is selected")
    video_dir: str | None = Field(None, description="the videos' folder inside the data root, searched recursively "
                                                    "by file stem (default: the reference loaders' layout, e.g. "
                                                    "videos/all for MSR-VTT)")
    n_frames: int | None = Field(None, ge=1, description="frames per video (default: the dataset's, 12; "
                                                         "64 for DiDeMo and ActivityNet; new stores only)")
    # issue 26: inputs of CLIP's last blocks, for `vtr train --finetune-clip K`
    cache_clip_layers: int = Field(0, ge=0, le=4, description="also store CLIP's hidden states entering its "
                                                             "last K residual blocks, visual and text "
                                                             "(fp16; B/32: 0.9 MB per video and 33 KB per "
                                                             "caption per layer; 0: none)")
    caption_template: str | None = Field(None, description="also encode every caption wrapped in this template, "
                                                           "e.g. \"This is a video about {}.\" (WAVER's "
                                                           "--prompt_tuning), beside the raw captions")
    n_words: int | None = Field(None, ge=3, le=77, description="tokens per caption, SOT and EOT included "
                                                               "(default: the dataset's, 32; 64 for "
                                                               "DiDeMo and ActivityNet; new stores only)")

    @field_validator("caption_template")
    @classmethod
    def _one_slot(cls, template: str | None) -> str | None:
        if template is not None and template.count("{}") != 1:
            raise ValueError(f"caption_template must hold one {{}} for the caption, got {template!r}")
        return template

    @field_validator("clip_weights", "ast_weights")
    @classmethod
    def _absolute(cls, path: str | None) -> str | None:
        # the store's provenance records this path, and `vtr train` and `vtr search` open
        # it again, maybe from another folder
        return os.path.abspath(path) if path else path

    def reader_options(self) -> dict[str, Any]:
        """``dataset_options`` with ``n_val`` and ``video_dir`` added when given."""
        given = {"n_val": self.n_val, "video_dir": self.video_dir}
        return {**self.dataset_options, **{k: v for k, v in given.items() if v is not None}}

    def encoders(self, n_words: int | None = None) -> EncoderSpec:
        """The encoders' spec; ``n_words``: the store's caption length (default: the CLIP's)."""
        from extractors.encoders import clip_geometry

        return EncoderSpec(clip_model=self.clip_model, clip_weights=self.clip_weights,
                           ast_weights=self.ast_weights, ast_size=self.ast_size, random_init=self.random_init,
                           device=self.device, fbank_shift=self.fbank_shift,
                           context_length=n_words or clip_geometry(self.clip_model).context_length)
