"""Retrieval heads trained on cached features: heads, losses, metrics, the loop, evaluation.

Reads features only through ``storage`` (``open_store``); nothing here touches media.

Heads (``training.heads``)
    A head is an ``nn.Module`` built from a dataclass config and registered by name::

        @register_head("mine")
        class MyHead(Head):
            Config = MyConfig                      # dataclass; fields named dim, audio_dim,
                                                   # max_frames are filled from the store
            text_fields = ("text",)                # batch keys read by encode_text
            video_fields = ("frames", "frame_mask")  # ... by encode_video
            def encode_text(self, batch): ...      # -> tensor or dict of tensors, one row per caption
            def encode_video(self, batch): ...     # once per video, never sees text
            def similarity(self, text_repr, video_repr): ...  # -> [n_text, n_video] logits
            def loss(self, sim, batch, text_repr, video_repr): ...  # default: symmetric InfoNCE
            loss_fields = ()                       # batch keys only the loss reads (a teacher's)
            def param_groups(self, lr, weight_decay): ...  # optional: per-group learning rates
            def extra_metrics(self): ...           # optional: scalars logged per epoch

    Batch keys (``training.data.FIELDS``): ``text`` [B, D] caption embedding,
    ``text_tokens`` [B, W, D] and ``text_mask`` [B, W], ``frames`` [B, N, D] and
    ``frame_mask`` [B, N], ``audio`` [B, P, Da] float16 AST tokens (all or pooled), ``has_audio`` [B],
    ``tags`` [B, K, D] (the phrase embeddings of the video's top-K tags) and ``tag_mask``
    [B, K] (False past the phrase table and for videos whose tags step is not done).
    During training row i of the text fields is a caption of the video in row i of
    the video fields, and no batch holds two captions of one video. Evaluation
    encodes every video once and every caption once, then calls ``similarity`` on
    blocks of 1024 x 1024. Representations may be tensors or dicts of tensors
    (rows along dim 0).
    Registered: ``meanpool`` (CLIP4Clip's mean pooling; untrained it is zero-shot
    CLIP), ``avigate`` (audio resampler + gated fusion, AVIGATE, CVPR 2025), ``waver``
    (tag injection or KD from a tag teacher, seqTransf, WTI: WAVER, ICASSP 2024; its
    ``distill`` switch is injection | kd | none) and ``avigate+waver`` (AVIGATE's
    audio-gated frames into WAVER's interaction and distillation).

Audio as the heads consume it
    The store keeps all 1214 AST tokens (2 special + 12 x 101 patches, 768 wide: the
    layout's ``audio_special_tokens``, ``audio_freq_patches``, ``audio_time_patches``) in
    float16: 1.8 MiB per video, 16.8 GB for MSR-VTT's 9k training videos.
    ``TrainConfig.audio_tokens`` (``training.data.AudioTokens``; in the run's config.json)
    says what the heads read: ``all`` (default, AVIGATE's release) is every token with the
    special tokens merged into their mean (1213), read from the store by
    ``training.data.StoreAudio``; ``pool-time-N`` (one merged special token, then the
    patches averaged over frequency and over N - 1 equal time windows) and
    ``pool-tokens-N`` (N windows along the token axis) are computed once per run into
    ``RUN/audio_<option>.npy``, memory-mapped. Audio stays float16 in memory and in the
    batch (the head casts it); when the train split does not fit half the available RAM
    the loader reads the audio per batch instead of holding it. Videos whose audio step
    is not done, or that have no audio, get ``has_audio`` False: AVIGATE masks them
    (``audio_zero_fill`` feeds their zero tokens instead, as the release did).

Losses (``training.losses``)
    ``info_nce`` (symmetric), ``adaptive_margins`` + ``adaptive_margin_loss`` (AVIGATE:
    lambda 0.2, delta 0.1, margins from frozen text / frame similarities, no gradient).

Trainer (``training.trainer``), evaluation (``training.evaluate``), run folders (``training.runs``)
    ``train(store, head, out, overrides, TrainConfig(...), resume=False)``: AdamW with
    the head's parameter groups, linear warm-up then cosine, gradient clipping, fp16
    autocast and pinned memory on CUDA (same code path, disabled, on CPU), seeded and
    deterministic on CPU (the batch order depends on (seed, epoch) only, so a resumed
    run repeats an uninterrupted one exactly). Features are loaded into memory, or
    streamed in shards through dask when a split exceeds half the available RAM
    (``stream``). Selects the epoch on val (multi-caption text->video R@1+R@5+R@10),
    evaluates test once at the end (``training.evaluate``: similarity matrix, split
    reports, the selection score, ``evaluate_run``). ``training.runs``: ``TrainConfig``,
    devices, the run folder's files, ``load_run``, ``RunError``.

Metrics (``training.metrics``)
    ``retrieval_metrics(sim, caption_video=None, direction="t2v")`` ->
    ``{R1, R5, R10, MdR, MnR}``: CLIP4Clip's conventions, ties pessimistic,
    single- and multi-caption protocols.

CLI (``vtr.commands.train``)
    ``vtr train --store S --head H --out RUN [--epochs --batch-size --lr --set k=v ...]``,
    ``vtr eval --store S --run RUN [--split test] [--style-shift]`` and
    ``vtr ablate --store S --out DIR`` (every head side by side, ``training.ablate``).

Writing style (``training.style``)
    The style-shift score: text->video R@1 of the store's style-rewritten captions
    (variables ``style_caption_*``, rewritten and encoded by the extraction's style step,
    ``extractors.style``) against their plain sources, and of each video's other
    captions ("other writers") against its first.
"""
