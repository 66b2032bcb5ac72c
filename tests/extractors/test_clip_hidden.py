"""Issue 26: the frames step's hidden states (``encode_frames(hidden_layers=K)``), packed
across batches like the features: ``frame_hidden_j`` is the input of block L - j (the
tail of j blocks run on it gives the stored feature), zero in padded slots, and the
features themselves are those of a run without hidden states, bit for bit."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from extractors.clip_encoder import create_clip_encoder
from extractors.engine import encode_frames
from tests.extractors.test_engine import _video
from training.clip_finetune import ClipTail


def test_hidden_states_per_video_are_the_inputs_of_the_top_blocks(tmp_path):
    enc = create_clip_encoder(random_init=True, device="cpu", channels_last=False)
    paths = [_video(tmp_path / "a.mp4", 3.0, audio=False), _video(tmp_path / "b.mp4", 5.0, audio=False)]
    kw = dict(batch_size=5, timeout_s=60, workers=1, n_frames=6)  # 3 + 5 frames: a video straddles two batches
    plain = [r.data for r in encode_frames(enc, paths, **kw)]
    rich = [r.data for r in encode_frames(enc, paths, hidden_layers=2, **kw)]
    state = {k: v.detach() for k, v in enc.model.state_dict().items()}
    for p, r in zip(plain, rich):
        assert np.array_equal(p["frame_features"], r["frame_features"])
        mask = r["frame_mask"]
        for j in (1, 2):
            h = r[f"frame_hidden_{j}"]
            assert h.dtype == np.float16 and h.shape == (6, 50, 768)
            assert not h[~mask].any()
            tail = ClipTail(j, **ClipTail.geometry(state), quickgelu=False)
            tail.load_clip(state)
            with torch.no_grad():
                out = tail.visual(torch.from_numpy(h[mask]).float())
            assert F.cosine_similarity(out, torch.from_numpy(r["frame_features"][mask]), dim=-1).min() >= 0.999
