"""The training loop: AdamW with per-group learning rates, warm-up + cosine, gradient
clipping, AMP on CUDA; model selection on val, test once at the end.

A run folder holds ``config.json`` (head, head config, trainer config, store identity),
``head.safetensors`` (best on val), ``last.safetensors`` + ``last_state.pt`` (optimiser,
schedule, epoch: what ``resume`` continues from), ``metrics.csv``, ``tb/`` (TensorBoard),
``test_metrics.json``, the pooled-audio cache, and from ``training.plots``: ``ranks.npz``,
``gates.npz`` (heads with gates) and ``plots/*.png``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from storage import layout_of
from training.data import (EmptySplitError, SplitData, TrainLoader, load_arrays, pooled_audio, select_split,
                           store_identity, to_batch)
from training.heads import Head, create_head
from training.metrics import retrieval_report


class RunError(Exception):
    """A run folder that cannot be used as asked (exists, missing, other store)."""


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-4
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: float = 0.1  # fraction of all steps
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # fp16 autocast + grad scaling; only ever on CUDA
    audio_tokens: int = 32  # AST tokens pooled to this many (see training.data.pool_audio)
    stream: str = "auto"  # auto | memory | dask
    eval_batch_size: int = 256

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise ValueError(f"need epochs >= 1 and batch size >= 2 (got {self.epochs}, {self.batch_size})")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.stream not in ("auto", "memory", "dask"):
            raise ValueError(f"stream must be auto, memory or dask, not {self.stream!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise RunError(f"unknown device {name!r} (auto | cpu | cuda)")
    return torch.device(name)


def lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --- representations may be tensors or dicts of tensors ---------------------------------
def _cat(parts: list):
    if isinstance(parts[0], dict):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)


def _rows(rep, a: int, b: int):
    return {k: v[a:b] for k, v in rep.items()} if isinstance(rep, dict) else rep[a:b]


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device_type=device.type, dtype=torch.float16,
                          enabled=amp and device.type == "cuda")


@torch.no_grad()
def similarity_matrix(head: Head, arrays: dict[str, np.ndarray], device: torch.device,
                      batch_size: int = 256, block: int = 1024, amp: bool = True) -> np.ndarray:
    """[n_captions, n_videos] scores: each video encoded once, then text x video blocks,
    so per-frame intermediates never exceed ``block x block x frames``."""
    head.eval()
    n_v, n_c = arrays[head.video_fields[0]].shape[0], arrays[head.text_fields[0]].shape[0]
    with _autocast(device, amp):
        vid = _cat([head.encode_video(to_batch(arrays, None, np.arange(a, min(a + batch_size, n_v)),
                                               head.video_fields, device))
                    for a in range(0, n_v, batch_size)])
        txt = _cat([head.encode_text(to_batch(arrays, np.arange(a, min(a + batch_size, n_c)), None,
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
    """Single-caption (first caption per video) and multi-caption metrics of one split."""
    arrays = load_arrays(store, data, head.text_fields + head.video_fields, audio)
    sim = similarity_matrix(head, arrays, device, batch_size, amp=amp)
    report = retrieval_report(sim, arrays["caption_video"], data.first_captions())
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


# --- run folder -------------------------------------------------------------------------
def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def save_head(head: Head, path: str) -> None:
    tmp = path + ".tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, tmp,
              metadata={"head": head.name})
    os.replace(tmp, path)


def load_run(run: str, device: torch.device | str = "cpu", which: str = "head") -> tuple[Head, dict]:
    """The head saved in ``run`` (``which`` = head: best on val; last: last epoch)."""
    cfg_path = os.path.join(run, "config.json")
    if not os.path.exists(cfg_path):
        raise RunError(f"{run}: not a training run (no config.json)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    weights = os.path.join(run, f"{which}.safetensors")
    if not os.path.exists(weights):
        raise RunError(f"{run}: no {which}.safetensors (the run has not finished an epoch)")
    head = create_head(cfg["head"], cfg["head_config"])
    head.load_state_dict(load_file(weights, device="cpu"), strict=True)
    return head.to(device), cfg


def check_same_store(run: str, cfg: dict, store: str) -> None:
    ident, want = store_identity(store), cfg["store"]
    keys = ("dataset", "created", "n_videos", "n_captions")  # not the path: stores may move
    if any(ident[k] != want[k] for k in keys):
        raise RunError(f"{run} was trained on store {want['path']} (dataset {want['dataset']!r}, "
                       f"created {want['created']}), not on {store} (dataset {ident['dataset']!r}, "
                       f"created {ident['created']})")


def audio_for(head_cls_fields: tuple[str, ...], store: str, run: str, n_tokens: int,
              progress: bool) -> np.ndarray | None:
    if "audio" not in head_cls_fields:
        return None
    return pooled_audio(store, os.path.join(run, f"audio_pool{n_tokens}.npy"), n_tokens, progress)


def _truncate_csv(path: str, last_epoch: int) -> None:
    """Drop rows of epochs after the last checkpoint (written before an interruption)."""
    if not os.path.exists(path):
        return
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
        fields = list(rows[0].keys()) if rows else None
    keep = [r for r in rows if int(r["epoch"]) <= last_epoch]
    if fields is None:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(keep)


def _append_csv(path: str, row: dict) -> None:
    new = not os.path.exists(path)
    if not new:
        with open(path, newline="") as f:
            fields = next(csv.reader(f))
    else:
        fields = list(row)
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow(row)


# --- the loop ---------------------------------------------------------------------------
def train(store: str, head_name: str, out: str, head_overrides: dict | None = None,
          config: TrainConfig | None = None, resume: bool = False, progress: bool = True,
          log=print) -> dict:
    """Train ``head_name`` on the store's train split into run folder ``out``.

    Returns ``{"best_epoch", "val": report or None, "test": report or None}``.
    ``resume`` continues an interrupted run from its last finished epoch with the
    configuration saved in the run (the arguments given now are ignored).
    """
    cfg_path = os.path.join(out, "config.json")
    if resume:
        if not os.path.exists(cfg_path):
            raise RunError(f"{out}: nothing to resume (no config.json)")
        with open(cfg_path) as f:
            saved = json.load(f)
        check_same_store(out, saved, store)
        head_name, head_overrides = saved["head"], saved["head_config"]
        config = TrainConfig(**saved["train"])
    else:
        if os.path.exists(cfg_path):
            raise RunError(f"{out}: a run already exists there (pass --resume to continue it)")
        config = config or TrainConfig()
    c = config
    device = resolve_device(c.device)
    layout = layout_of(store)
    torch.manual_seed(c.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    head = create_head(head_name, head_overrides, dim=layout.dim, audio_dim=layout.audio_dim,
                       max_frames=layout.n_frames).to(device)
    train_data = select_split(store, "train")
    try:
        val_data = select_split(store, "val")
    except EmptySplitError as e:
        val_data = None
        log(f"note: {e}; selecting the last epoch")
    os.makedirs(out, exist_ok=True)
    if not resume:
        _write_json(cfg_path, {"head": head_name, "head_config": dataclasses.asdict(head.config),
                               "train": dataclasses.asdict(c), "store": store_identity(store)})
    fields = head.text_fields + head.video_fields
    audio = audio_for(fields, store, out, c.audio_tokens, progress)
    loss_only = tuple(f for f in head.loss_fields if f not in fields)
    loader = TrainLoader(store, train_data, fields + loss_only, c.batch_size, device, audio, stream=c.stream)

    opt = torch.optim.AdamW(head.param_groups(c.lr, c.weight_decay), lr=c.lr,
                            betas=(c.beta1, c.beta2), eps=c.eps)
    total = c.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, total, int(c.warmup * total)))
    scaler = torch.amp.GradScaler(device.type, enabled=c.amp and device.type == "cuda")
    start_epoch, best_score, best_epoch, step = 0, -math.inf, -1, 0
    if resume and os.path.exists(os.path.join(out, "last_state.pt")):
        state = torch.load(os.path.join(out, "last_state.pt"), map_location="cpu", weights_only=False)
        head.load_state_dict(load_file(os.path.join(out, "last.safetensors"), device=str(device)))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        start_epoch, best_score, best_epoch, step = (state["epoch"] + 1, state["best_score"],
                                                     state["best_epoch"], state["step"])
        log(f"resuming {out} after epoch {start_epoch} of {c.epochs}")
    _truncate_csv(os.path.join(out, "metrics.csv"), start_epoch - 1)

    from torch.utils.tensorboard import SummaryWriter
    tb = SummaryWriter(os.path.join(out, "tb"), purge_step=step)
    val_report = None
    for epoch in range(start_epoch, c.epochs):
        head.train()
        t0, losses = time.perf_counter(), []
        bar = tqdm(loader.epoch(c.seed, epoch), total=len(loader), desc=f"epoch {epoch + 1}/{c.epochs}",
                   disable=not progress, leave=False)
        for batch in bar:
            with _autocast(device, c.amp):
                t = head.encode_text(batch)
                v = head.encode_video(batch)
                sim = head.similarity(t, v)
                loss = head.loss(sim, batch, t, v)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{out}: loss is {loss.item()} at epoch {epoch + 1}, step {step}")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(head.parameters(), c.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            losses.append(loss.item())
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            tb.add_scalar("train/loss", losses[-1], step)
        row = {"epoch": epoch, "step": step, "lr": opt.param_groups[0]["lr"],
               "train_loss": float(np.mean(losses)) if losses else float("nan"),
               "epoch_s": time.perf_counter() - t0, **head.extra_metrics()}
        if val_data is not None:
            val_report = evaluate_split(head, store, val_data, audio, device, c.eval_batch_size, c.amp)
            row.update(flat_metrics(val_report, "val_"))
            score = selection_score(val_report)
        else:
            score = float(epoch)
        for k, v in row.items():
            if k not in ("epoch", "step"):
                tb.add_scalar(f"epoch/{k}", v, step)
        _append_csv(os.path.join(out, "metrics.csv"), row)
        # ties go to the later epoch: a small val split saturates (one val video scores
        # R@1 100 from epoch 1 on) and the later head has trained longer
        if score >= best_score:
            best_score, best_epoch = score, epoch
            save_head(head, os.path.join(out, "head.safetensors"))
        # the commit point of an epoch: resume starts after the last one that got here
        save_head(head, os.path.join(out, "last.safetensors"))
        tmp = os.path.join(out, "last_state.pt.tmp")
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
                    "step": step, "best_score": best_score, "best_epoch": best_epoch}, tmp)
        os.replace(tmp, os.path.join(out, "last_state.pt"))
        msg = f"epoch {epoch + 1}/{c.epochs}: loss {row['train_loss']:.4f}"
        if val_report is not None:
            m = val_report["multi"]["t2v"]
            msg += f", val t2v R@1 {m['R1']:.1f} R@5 {m['R5']:.1f} R@10 {m['R10']:.1f}"
        log(msg)
    tb.close()

    best, _ = load_run(out, device)
    from training.plots import record_eval_details, write_plots
    record_eval_details(best, store, out, audio, device, c.eval_batch_size, c.amp)  # ranks, gates
    write_plots(out)
    result = {"best_epoch": best_epoch, "val": None, "test": None}
    if val_data is not None:
        result["val"] = evaluate_split(best, store, val_data, audio, device, c.eval_batch_size, c.amp)
    try:
        test_data = select_split(store, "test")
    except EmptySplitError as e:
        log(f"note: {e}; no test evaluation")
        return result
    result["test"] = evaluate_split(best, store, test_data, audio, device, c.eval_batch_size, c.amp)
    result["test"]["best_epoch"] = best_epoch
    _write_json(os.path.join(out, "test_metrics.json"), result["test"])
    return result


def prepare_eval(store: str, run: str, device: str = "auto", progress: bool = True):
    """A run's best head ready to score ``store``, which must be the store it was trained
    on: ``(head, saved config, TrainConfig, pooled audio or None, device)``."""
    dev = resolve_device(device)
    head, cfg = load_run(run, dev)
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


__all__ = ["RunError", "TrainConfig", "evaluate_run", "evaluate_split", "load_run", "prepare_eval",
           "similarity_matrix", "train"]
