"""Writing-style sensitivity of the WAVER student with and without explicit KD, against
mean pooling trained in the same run, over several planted stores.

Each store (``training.planted_waver``: 300 videos, four writers whose style is a cue to
the look of the videos they mostly describe, test captions rewritten as the other
writers) trains ``meanpool``, ``waver`` (distill=none) and ``waver`` (distill=kd) with the
same seed and budget, then prints per head the style-shift gap (plain minus rewritten
text->video R@1, mean over styles) and the plain R@1, and the KD gap as a fraction of
meanpool's.

    .venv/bin/python benchmarks/style_gap.py --seeds 0 1 2 3 4 5
"""
from __future__ import annotations

import argparse
import tempfile

import torch

from training.data import select_split
from training.planted_waver import write_waver_store
from training.runs import TrainConfig, load_run
from training.style import style_report
from training.trainer import train

FAST = dict(batch_size=32, lr=1e-3, audio_tokens="pool-tokens-8", seed=0, epochs=10)
SMALL_WAVER = {"n_heads": 4, "temporal_layers": 1, "wti_hidden": 64}
HEADS = (("meanpool", "meanpool", None), ("waver/none", "waver", {**SMALL_WAVER, "distill": "none"}),
         ("waver/kd", "waver", {**SMALL_WAVER, "distill": "kd"}))


def one_store(root: str, seed: int) -> dict[str, tuple[float, float]]:
    path = f"{root}/s{seed}.zarr"
    write_waver_store(path, 300, 3, n_styles=4, style_tied=0.9, style_scale=0.6, style_nuisance=0.6,
                      n_shift_styles=3, splits=(200, 20, 80), seed=seed)
    test = select_split(path, "test")
    out = {}
    for key, name, ov in HEADS:
        run = f"{root}/s{seed}-{key.replace('/', '-')}"
        train(path, name, run, ov, TrainConfig(**FAST), progress=False, log=lambda m: None)
        head, _ = load_run(run)
        rep = style_report(head, path, test, None, torch.device("cpu"))
        out[key] = (rep["mean_gap"], rep["plain"]["R1"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    a = p.parse_args()
    print(f"{'store seed':<12}" + "".join(f"{k + ' gap':>16}{'R@1':>7}" for k, _, _ in HEADS)
          + f"{'kd / meanpool gap':>19}")
    with tempfile.TemporaryDirectory() as root:
        for seed in a.seeds:
            r = one_store(root, seed)
            ratio = r["waver/kd"][0] / r["meanpool"][0] if r["meanpool"][0] else float("nan")
            print(f"{seed:<12}" + "".join(f"{g:>16.1f}{r1:>7.1f}" for g, r1 in r.values()) + f"{ratio:>19.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
