"""Fine-tuning CLIP's last K blocks on cached hidden states (issue 26) against an
end-to-end step on raw frames, in one run on one device.

Prints, for K = 0 (the cached pooled features), 1 and 2 (``vtr train --finetune-clip K``):
the seconds per training step and the peak memory, each as a ratio to one end-to-end step
(open_clip ViT-B/32 forward + backward on every frame and caption, then the same head);
and the store's bytes per video for each K (frames plus its captions, MSR-VTT's 20), as a
ratio to K = 0.

    .venv/bin/python benchmarks/finetune.py --device cuda            # batch 32 x 12 frames
    .venv/bin/python benchmarks/finetune.py --quick --device cuda    # small, under a minute

Peak memory: CUDA's ``max_memory_allocated`` above what the step started with (on the CPU
it is not measured: "n/a"). CLIP is random
(nothing is downloaded): a step's cost does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from steps import plain_step  # noqa: E402  benchmarks/steps.py (this folder is on sys.path)

FRAMES, WORDS, CAPTIONS_PER_VIDEO = 12, 32, 20


class PeakMemory:
    """Peak bytes allocated above the start on a CUDA device (None on the CPU: the
    allocator there keeps no high-water mark, and the process's resident set reuses freed
    pages, so it would not measure one step)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.bytes: int | None = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.bytes = torch.cuda.max_memory_allocated() - self.base


def timed(step, device: torch.device, steps: int, warmup: int) -> tuple[float, int | None]:
    """(median seconds per step, peak bytes of one step) after ``warmup`` steps."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    with PeakMemory(device) as mem:
        step()
    return statistics.median(times), mem.bytes


def store_bytes_per_video(k: int, tokens: int, v_width: int, t_width: int, dim: int) -> int:
    """frame_features + frame_hidden_1..K, and 20 captions' caption_tokens, caption_embedding
    and caption_hidden_1..K (fp16; masks left out)."""
    frames = FRAMES * dim * 2 + k * FRAMES * tokens * v_width * 2
    captions = CAPTIONS_PER_VIDEO * (WORDS * dim * 2 + dim * 2 + k * WORDS * t_width * 2)
    return frames + captions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="batch of 2 videos x 4 frames, 1 warm-up and 2 timed steps")
    ap.add_argument("--batch", type=int, default=32, help="videos (= captions) per step")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per setting")
    args = ap.parse_args()
    import open_clip

    from training.clip_finetune import ClipFinetuneHead, ClipTail
    from training.heads import create_head

    device = torch.device(args.device)
    b, n, steps, warmup = (2, 4, 2, 1) if args.quick else (args.batch, FRAMES, args.steps, 2)
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32", pretrained=None).to(device)
    state = {k: v.detach() for k, v in clip.state_dict().items()}
    geo = ClipTail.geometry(state)
    tokens_v = int(clip.visual.positional_embedding.shape[0])
    dim = geo["dim"]
    text_ids = open_clip.get_tokenizer("ViT-B-32", context_length=WORDS)(
        [f"a caption about thing number {i}" for i in range(b)]).to(device)
    text_mask = (torch.arange(WORDS, device=device)[None] <= text_ids.argmax(-1)[:, None])
    frame_mask = torch.ones(b, n, dtype=torch.bool, device=device)
    lr = dict(lr=1e-4)

    # end to end: every frame and caption through the whole of CLIP, then the head
    head = create_head("meanpool", None, dim=dim).to(device)
    clip.train()
    clip.attn_mask = clip.attn_mask[:WORDS, :WORDS] if clip.attn_mask is not None else None
    clip.positional_embedding.data = clip.positional_embedding.data[:WORDS]
    opt = torch.optim.AdamW(list(head.parameters()) + list(clip.parameters()), **lr)
    images = torch.randn(b * n, 3, 224, 224, device=device)

    def e2e() -> None:
        frames = clip.encode_image(images).view(b, n, dim)
        text = clip.encode_text(text_ids)
        plain_step(head, opt, {"frames": frames, "frame_mask": frame_mask, "text": text, "text_tokens": None,
                               "text_mask": text_mask})

    results = {"end-to-end": timed(e2e, device, steps, warmup)}
    del opt
    clip.cpu()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    for k in (0, 1, 2):
        base = create_head("meanpool", None, dim=dim)
        if k:
            tail = dict(geo, quickgelu=False)
            head_k = ClipFinetuneHead(ClipFinetuneHead.Config(base="meanpool", k=k, tail=tail), base=base)
            head_k.tail.load_clip(state)
            batch = {f"frame_hidden_{k}": torch.randn(b, n, tokens_v, geo["visual_width"], device=device).half(),
                     f"caption_hidden_{k}": torch.randn(b, WORDS, geo["text_width"], device=device).half(),
                     "frame_mask": frame_mask, "text_mask": text_mask}
        else:
            head_k = base
            batch = {"frames": torch.randn(b, n, dim, device=device), "frame_mask": frame_mask,
                     "text": torch.randn(b, dim, device=device)}
        head_k.to(device)
        opt = torch.optim.AdamW(head_k.parameters(), **lr)

        def step(head_k=head_k, opt=opt, batch=batch) -> None:
            plain_step(head_k, opt, dict(batch))  # a fresh dict: the tail writes its outputs into it

        results[f"K={k}"] = timed(step, device, steps, warmup)
        del opt, head_k

    e2e_s, e2e_mem = results["end-to-end"]
    print(f"device {device}, batch {b} videos x {n} frames + {b} captions of {WORDS} tokens, ViT-B/32 "
          f"({'quick' if args.quick else 'full'})")
    print(f"{'setting':<12} {'s/step':>9} {'step vs e2e':>12} {'peak MB':>9} {'mem vs e2e':>11}")
    for name, (s, mem) in results.items():
        mb, ratio = (f"{mem / 1e6:9.1f}", f"{mem / e2e_mem:11.4f}") if mem is not None else (f"{'n/a':>9}", f"{'n/a':>11}")
        print(f"{name:<12} {s:9.4f} {s / e2e_s:12.4f} {mb} {ratio}")
    print(f"\nstore bytes per video (12 frames + {CAPTIONS_PER_VIDEO} captions, fp16):")
    k0 = store_bytes_per_video(0, tokens_v, geo["visual_width"], geo["text_width"], dim)
    for k in (0, 1, 2):
        v = store_bytes_per_video(k, tokens_v, geo["visual_width"], geo["text_width"], dim)
        print(f"K={k}: {v / 1e6:7.3f} MB  ({v / k0:5.1f}x K=0)")


if __name__ == "__main__":
    main()
