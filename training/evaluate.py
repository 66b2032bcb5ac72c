"""Scoring a head: the similarity matrix of a split, its retrieval report, the score that
selects the epoch, and a finished run's evaluation."""
from __future__ import annotations

import numpy as np
import torch

from storage import read_attrs
from training.data import SplitData, load_arrays, select_split, to_batch
from training.heads import Head
from training.metrics import retrieval_report
from training.runs import TrainConfig, audio_for, check_same_store, load_run, resolve_device


# --- representations may be tensors or dicts of tensors ---------------------------------
def cat_reprs(parts: list):
    """Representations of consecutive row blocks joined into one (rows along dim 0)."""
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _rows(rep, a: int, b: int):
    return {k: v[a:b] for k, v in rep.items()} if isinstance(rep, dict) else rep[a:b]


def amp_dtype(device: torch.device, amp: bool, training: bool = False) -> torch.dtype | None:
    """The autocast dtype on CUDA when ``amp`` (None: float32). Training takes bf16 where
    the GPU has it (fp16's narrow range needs loss scaling); scoring keeps fp16, whose 10
    mantissa bits keep close similarities apart where bf16's 7 would tie them."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if training and torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, amp: bool, training: bool = False):
    """Autocast in ``amp_dtype``; a no-op off CUDA or without ``amp``."""
    dtype = amp_dtype(device, amp, training)
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def encode_videos(head: Head, arrays: dict[str, np.ndarray], device: torch.device,
                  batch_size: int = 256):
    """The head's representation of every video row of ``arrays``, in order."""
    n_v = arrays[head.video_fields[0]].shape[0]
    return cat_reprs([head.encode_video(to_batch(arrays, None, np.arange(a, min(a + batch_size, n_v)),
                                                 head.video_fields, device))
                      for a in range(0, n_v, batch_size)])


@torch.no_grad()
def similarity_matrix(head: Head, arrays: dict[str, np.ndarray], device: torch.device,
                      batch_size: int = 256, block: int = 1024, amp: bool = True) -> np.ndarray:
    """[n_captions, n_videos] scores: each video encoded once, then text x video blocks,
    so per-frame intermediates never exceed ``block x block x frames``."""
    head.eval()
    n_v, n_c = arrays[head.video_fields[0]].shape[0], arrays[head.text_fields[0]].shape[0]
    with autocast(device, amp):
        vid = encode_videos(head, arrays, device, batch_size)
        txt = cat_reprs([head.encode_text(to_batch(arrays, np.arange(a, min(a + batch_size, n_c)), None,
                                                   head.text_fields, device))
                         for a in range(0, n_c, batch_size)])
        sim = np.empty((n_c, n_v), dtype=np.float32)
        for a in range(0, n_c, block):
            for b in range(0, n_v, block):
                s = head.similarity(_rows(txt, a, a + block), _rows(vid, b, b + block))
                sim[a:a + block, b:b + block] = s.float().cpu().numpy()
    return sim


def evaluate_split(head: Head, store: str, data: SplitData, audio: np.ndarray | None,
                   device: torch.device, batch_size: int = 256, amp: bool = True) -> dict:
    """Single-caption (first caption per video) and multi-caption metrics of one split,
    labelled with the store's protocol (the one its dataset is scored by)."""
    arrays = load_arrays(store, data, head.text_fields + head.video_fields, audio)
    sim = similarity_matrix(head, arrays, device, batch_size, amp=amp)
    report = retrieval_report(sim, arrays["caption_video"], data.first_captions(),
                              protocol=read_attrs(store).get("protocol", "single"))
    report["split"] = data.name
    return report


def flat_metrics(report: dict, prefix: str) -> dict[str, float]:
    return {f"{prefix}{proto}_{d}_{k}": v for proto in ("single", "multi")
            for d in ("t2v", "v2t") for k, v in report[proto][d].items()}


def selection_score(report: dict) -> float:
    """Model selection on val: text->video R@1 + R@5 + R@10, multi-caption (less noisy
    than R@1 alone on a few hundred videos)."""
    m = report["multi"]["t2v"]
    return m["R1"] + m["R5"] + m["R10"]


def prepare_eval(store: str, run: str, device: str = "auto", progress: bool = True, which: str = "head"):
    """A run's head (``which``: head = best on val, or last) ready to score ``store``,
    which must be the store it was trained on: ``(head, saved config, TrainConfig,
    pooled audio or None, device)``."""
    dev = resolve_device(device)
    head, cfg = load_run(run, dev, which)
    check_same_store(run, cfg, store)
    tc = TrainConfig(**cfg["train"])
    audio = audio_for(head.text_fields + head.video_fields, store, run, tc.audio_tokens, progress)
    return head, cfg, tc, audio, dev


def evaluate_run(store: str, run: str, split: str = "test", device: str = "auto",
                 progress: bool = True) -> dict:
    """Metrics of a run's best head on one split of ``store`` (the store it was trained on)."""
    head, cfg, tc, audio, dev = prepare_eval(store, run, device, progress)
    report = evaluate_split(head, store, select_split(store, split), audio, dev, tc.eval_batch_size, tc.amp)
    report.update({"run": run, "head": cfg["head"], "store": store})
    return report


__all__ = ["amp_dtype", "autocast", "cat_reprs", "encode_videos", "evaluate_run", "evaluate_split", "flat_metrics",
           "prepare_eval", "selection_score", "similarity_matrix"]
