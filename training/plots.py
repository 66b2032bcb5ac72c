"""PNG plots of a run folder, and the per-video numbers they need.

``record_eval_details`` (called by the trainer after the test evaluation) re-scores the
best head on the test split (val when there is no test) and writes ``RUN/ranks.npz``
(0-based text->video and video->text ranks, multi-caption protocol) and, for heads with
gates (modules named ``gate_*``, e.g. AVIGATE's ``fusion.N.gate_mha``), ``RUN/gates.npz``:
one value per video and gate for the val and test videos, captured by forward hooks
while the videos are encoded.

``write_plots(run)`` -> ``RUN/plots/{loss,recall_at_1,recall_at_k,gates}.png`` (those
whose data exists).
"""
from __future__ import annotations

import os

import numpy as np
import torch

from training.data import EmptySplitError, load_arrays, select_split
from training.evaluate import similarity_matrix
from training.metrics import ranks_text_to_video, ranks_video_to_text
from training.runs import read_metrics_csv

PLOT_DIR = "plots"


def _gate_modules(head: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {n: m for n, m in head.named_modules() if n.rsplit(".", 1)[-1].startswith("gate_")}


@torch.no_grad()
def record_eval_details(head, store: str, run: str, audio, device: torch.device,
                        batch_size: int = 256, amp: bool = True) -> None:
    splits = {}
    for name in ("val", "test"):
        try:
            splits[name] = select_split(store, name)
        except EmptySplitError:
            continue
    if not splits:
        return
    gates = _gate_modules(head)
    captured: dict[str, list[np.ndarray]] = {n: [] for n in gates}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: captured[n].append(
        out.detach().float().reshape(-1).cpu().numpy())) for n, m in gates.items()]
    fields = head.text_fields + head.video_fields
    gate_rows: dict[str, list[np.ndarray]] = {n: [] for n in gates}
    ids, split_of = [], []
    try:
        for name, data in splits.items():
            for n in captured:
                captured[n].clear()
            arrays = load_arrays(store, data, fields, audio)
            sim = similarity_matrix(head, arrays, device, batch_size, amp=amp)
            for n in gates:  # similarity_matrix encodes each video exactly once, in order
                gate_rows[n].append(np.concatenate(captured[n])[:data.n_videos])
            ids.append(data.videos)
            split_of += [name] * data.n_videos
            if name == ("test" if "test" in splits else "val"):
                np.savez(os.path.join(run, "ranks.npz"), split=name,
                         t2v=ranks_text_to_video(sim, arrays["caption_video"]),
                         v2t=ranks_video_to_text(sim, arrays["caption_video"]))
    finally:
        for h in hooks:
            h.remove()
    if gates:
        np.savez(os.path.join(run, "gates.npz"), video_index=np.concatenate(ids),
                 split=np.asarray(split_of), **{n: np.concatenate(v) for n, v in gate_rows.items()})


def recall_curve(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """K = 1..max rank + 1 and R@K in percent."""
    ks = np.arange(1, int(ranks.max()) + 2)
    return ks, 100.0 * (ranks[None, :] < ks[:, None]).mean(axis=1)


def k_ticks(max_k: int) -> list[int]:
    """Ticks 1, 5, 10, 50, 100, ... up to ``max_k``: R@K's log axis labelled with the Ks
    the tables use (1, 2, 3, 4 on a shorter axis)."""
    if max_k < 5:
        return list(range(1, max_k + 1))
    ticks, base = [], 1
    while base <= max_k:
        ticks += [k for k in (base, 5 * base) if k <= max_k]
        base *= 10
    return ticks


GATE_COLUMNS = 4  # 4 x 2.6 in at 100 dpi: the grid fits the report's 1200 px page


def write_plots(run: str) -> list[str]:
    """Write the run's PNGs into ``RUN/plots``; returns their paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, MaxNLocator, NullFormatter

    out_dir = os.path.join(run, PLOT_DIR)
    os.makedirs(out_dir, exist_ok=True)
    written = []

    def save(fig, name):
        path = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    m = read_metrics_csv(run)
    if "epoch" in m and "train_loss" in m:
        ep = m["epoch"] + 1
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot(ep, m["train_loss"], marker="o")
        ax.set(xlabel="epoch", ylabel="train loss", title="training loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, ... as in the logs
        save(fig, "loss.png")
        r1 = {k: v for k, v in m.items() if k.startswith("val_") and k.endswith("_R1")}
        if r1:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            for k, v in sorted(r1.items()):
                ax.plot(ep, v, marker="o", label=k[4:-3].replace("_", " "))
            ax.set(xlabel="epoch", ylabel="R@1 (%)", title="validation R@1", ylim=(-2, 102))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=8)
            save(fig, "recall_at_1.png")
    ranks_path = os.path.join(run, "ranks.npz")
    if os.path.exists(ranks_path):
        r = np.load(ranks_path)
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for d, label in (("t2v", "text -> video"), ("v2t", "video -> text")):
            ks, rec = recall_curve(r[d])
            ax.plot(ks, rec, marker=".", label=label)
        ax.set(xlabel="K", ylabel="R@K (%)", xscale="log", ylim=(0, 102),
               title=f"recall at K ({r['split']}, multi-caption)")
        ax.xaxis.set_major_locator(FixedLocator(k_ticks(int(ks[-1]))))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%d"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=8)
        save(fig, "recall_at_k.png")
    gates_path = os.path.join(run, "gates.npz")
    if os.path.exists(gates_path):
        g = np.load(gates_path)
        names = [n for n in g.files if n not in ("video_index", "split")]
        cols = min(GATE_COLUMNS, len(names))
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 0.4 + 2.4 * rows), squeeze=False)
        for ax, n in zip(axes.flat, names):
            ax.hist(g[n], bins=20, range=(-1, 1))
            ax.set_title(n, fontsize=8)
            ax.set_xlabel("gate value")
        for ax in axes.flat[len(names):]:
            ax.axis("off")
        fig.suptitle(f"gate values per layer ({len(g['video_index'])} val/test videos)", fontsize=9)
        save(fig, "gates.png")
    return written
