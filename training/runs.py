"""Run folders and the training configuration they record.

A run folder holds ``config.json`` (head, head config, ``TrainConfig``, store identity),
``head.safetensors`` (best on val), ``last.safetensors`` + ``last_state.pt`` (optimiser,
schedule, epoch: what ``resume`` continues from), ``metrics.csv``, ``tb/`` (TensorBoard),
``test_metrics.json``, the pooled-audio cache (``audio_pool-*.npy``), and from ``training.plots``: ``ranks.npz``,
``gates.npz`` (heads with gates) and ``plots/*.png``.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from storage import layout_of
from training.data import AUDIO_TOKENS_DEFAULT, AudioTokens, StoreAudio, pooled_audio, store_identity
from training.heads import Head, create_head, head_option, head_options
from training.optim import OPTIMIZERS


class RunError(Exception):
    """A run folder that cannot be used as asked (exists, missing, other store)."""


class ConfigError(RunError, ValueError):
    """A training configuration that cannot be used (a bad value, an unknown option)."""


class DivergedError(RunError, FloatingPointError):
    """The loss stopped being finite."""


@dataclass
class TrainConfig:
    epochs: int = 5
    batch_size: int = 128
    lr: float = 1e-4
    # lr multiplier of the tensors initialised from CLIP (``training.clip_init``); the
    # releases train them at the head's rate (their coef_lr is for CLIP's own weights)
    clip_lr_scale: float = 1.0
    weight_decay: float = 0.2
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: float = 0.1  # fraction of all steps
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # autocast on CUDA only: bf16 to train where the GPU has it, else fp16 with loss scaling;
    # fp16 to score (training.evaluate.amp_dtype)
    amp: bool = True
    audio_tokens: str = AUDIO_TOKENS_DEFAULT  # training.data.AudioTokens: all | pool-time-N | pool-tokens-N
    stream: str = "auto"  # auto | memory | dask (the host loader's)
    resident: str = "auto"  # auto | on | off: the train split held on the device (training.device_data)
    compile: bool = False  # torch.compile the training step's forward and loss
    eval_batch_size: int = 256
    # issue 26 (training.clip_finetune, training.optim)
    finetune_clip: int = 0  # fine-tune CLIP's last K blocks on the store's cached hidden states
    clip_lr: float = 1e-7  # their learning rate (the releases': lr 1e-4 x coef_lr 1e-3)
    optimizer: str = "adamw"  # adamw | bertadam (the releases', training.optim)
    grad_clip_scale: float = 1.0  # gradients / this before clip and step: the releases' DDP average over N GPUs
    template_captions: str = "off"  # off | auto | on: read caption_template_* (auto: when the store has them)

    def __post_init__(self):
        for name in ("lr", "eps"):  # NaN fails every comparison: test for the good values
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("weight_decay", "grad_clip", "clip_lr_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {v!r}")
        for name in ("beta1", "beta2"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 <= v < 1):
                raise ConfigError(f"{name} must be in [0, 1), got {v!r}")
        if self.epochs < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise ConfigError(f"need epochs >= 1 and batch size >= 2 (got {self.epochs}, {self.batch_size})")
        if not 0 <= self.warmup < 1:
            raise ConfigError(f"warmup is a fraction of the steps in [0, 1), got {self.warmup}")
        if self.clip_lr_scale < 0:
            raise ConfigError(f"clip_lr_scale must be >= 0, got {self.clip_lr_scale}")
        if self.stream not in ("auto", "memory", "dask"):
            raise ConfigError(f"stream must be auto, memory or dask, not {self.stream!r}")
        if self.resident not in ("auto", "on", "off"):
            raise ConfigError(f"resident must be auto, on or off, not {self.resident!r}")
        if self.resident == "on" and self.stream != "auto":
            raise ConfigError(f"resident=on holds the whole split on the device; stream={self.stream} is "
                              "for the host loader (resident=off)")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if self.finetune_clip < 0 or self.clip_lr < 0 or self.grad_clip_scale <= 0:
            raise ConfigError("need finetune_clip >= 0, clip_lr >= 0 and grad_clip_scale > 0")
        if self.template_captions not in ("off", "auto", "on"):
            raise ConfigError(f"template_captions must be off, auto or on, not {self.template_captions!r}")
        try:
            AudioTokens.parse(self.audio_tokens)
        except ValueError as e:
            raise ConfigError(str(e)) from None


class RunLock:
    """The run folder's lock, held while a run writes it (``flock`` on ``RUN/.lock``: it goes
    with the process, so a killed run leaves no stale lock). A second run into the folder is
    refused in one line naming the holder."""

    def __init__(self, run: str):
        import fcntl

        self.path = os.path.join(run, ".lock")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(self._fd)
            self._fd = -1
            raise RunError(f"{run}: another run is writing this folder ({holder}); wait for it "
                           f"or choose another --out") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                            f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = -1

    def __del__(self) -> None:
        self.release()


def split_settings(settings: dict, heads: Sequence[str]) -> tuple[dict, dict]:
    """``--set key=value`` settings split into ``TrainConfig`` fields and options of the
    ``heads`` being trained (dotted or flat, as ``head_option`` resolves them); a key that is
    neither is an error naming the valid keys."""
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(k for k in set(settings) - train_keys if not any(head_option(h, k) for h in heads))
    if unknown:
        valid = sorted({o for h in heads for o in head_options(h)})
        raise ConfigError(f"no option(s) {unknown} (training: {', '.join(sorted(train_keys))}; "
                          f"head: {', '.join(valid)})")
    return ({k: v for k, v in settings.items() if k in train_keys},
            {k: v for k, v in settings.items() if k not in train_keys})


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RunError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise RunError(f"unknown device {name!r} (auto | cpu | cuda)")
    return torch.device(name)


def write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def read_config(run: str) -> dict:
    """The run's ``config.json``."""
    cfg_path = os.path.join(run, "config.json")
    if not os.path.exists(cfg_path):
        raise RunError(f"{run}: not a training run (no config.json)")
    with open(cfg_path) as f:
        return json.load(f)


def save_head(head: Head, path: str) -> None:
    tmp = path + ".tmp"
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}, tmp,
              metadata={"head": head.name})
    os.replace(tmp, path)


def save_checkpoint(run: str, head: Head, opt, sched, scaler, **progress) -> None:
    """The commit point of an epoch: ``last.safetensors``, then optimiser, schedule,
    scaler, RNG and ``progress`` (epoch, step, best score and epoch) in ``last_state.pt``;
    resume starts after the last epoch that got here."""
    save_head(head, os.path.join(run, "last.safetensors"))
    tmp = os.path.join(run, "last_state.pt.tmp")
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(), "torch_rng": torch.get_rng_state(), **progress}, tmp)
    os.replace(tmp, os.path.join(run, "last_state.pt"))


def load_checkpoint(run: str, head: Head, opt, sched, scaler, device: torch.device) -> dict | None:
    """Restore what ``save_checkpoint`` wrote into the given objects and the torch RNG;
    returns its ``progress`` (None when no epoch finished)."""
    path = os.path.join(run, "last_state.pt")
    if not os.path.exists(path):
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    head.load_state_dict(load_file(os.path.join(run, "last.safetensors"), device=str(device)))
    opt.load_state_dict(state.pop("optimizer"))
    sched.load_state_dict(state.pop("scheduler"))
    scaler.load_state_dict(state.pop("scaler"))
    torch.set_rng_state(state.pop("torch_rng"))
    return state


def load_run(run: str, device: torch.device | str = "cpu", which: str = "head") -> tuple[Head, dict]:
    """The head saved in ``run`` (``which`` = head: best on val; last: last epoch)."""
    cfg = read_config(run)
    weights = os.path.join(run, f"{which}.safetensors")
    if not os.path.exists(weights):
        raise RunError(f"{run}: no {which}.safetensors (the run has not finished an epoch)")
    if cfg["head"] == "clip-finetune":
        import training.clip_finetune  # noqa: F401 - registers the head (it imports this module)
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


def audio_for(head_cls_fields: tuple[str, ...], store: str, run: str, audio_tokens: str,
              progress: bool) -> np.ndarray | StoreAudio | None:
    """The audio a head reads, indexed by store video (None when it reads none): all
    tokens straight from the store, or the run's pooled cache ``audio_<option>.npy``."""
    if "audio" not in head_cls_fields:
        return None
    pooling = AudioTokens.parse(audio_tokens)
    try:
        pooling.check(layout_of(store))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if pooling.pooling == "all":
        return StoreAudio(store)
    return pooled_audio(store, os.path.join(run, f"audio_{pooling}.npy"), pooling, progress)


def truncate_csv(path: str, last_epoch: int) -> None:
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


def append_csv(path: str, row: dict) -> None:
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


def read_metrics_csv(run: str) -> dict[str, np.ndarray]:
    """``metrics.csv`` as one float array per numeric column."""
    path = os.path.join(run, "metrics.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for key in (rows[0].keys() if rows else ()):
        try:
            out[key] = np.asarray([float(r[key]) if r[key] != "" else np.nan for r in rows])
        except ValueError:
            continue
    return out


__all__ = ["ConfigError", "DivergedError", "RunError", "RunLock", "TrainConfig", "append_csv", "audio_for",
           "check_same_store", "load_checkpoint", "load_run", "read_config", "read_metrics_csv",
           "resolve_device", "save_checkpoint", "save_head", "split_settings", "truncate_csv", "write_json"]
