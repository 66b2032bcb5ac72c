"""The training loop: AdamW with per-group learning rates, warm-up + cosine, gradient
clipping, mixed precision on CUDA (bf16, or fp16 with loss scaling), optionally
``torch.compile``; model selection on val, test once at the end. The train split is
held on the device when it fits (``training.device_data``).

What a run folder holds: ``training.runs``; how a head is scored: ``training.evaluate``.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm

from storage import layout_of, read_attrs
from storage.info import MIN_VAL_VIDEOS
from training.data import EmptySplitError, select_split, store_identity
from training.device_data import train_batches
from training.evaluate import amp_dtype, autocast, evaluate_split, flat_metrics, selection_score
from training.clip_finetune import check_finetune, quickgelu_of, use_template, wrap_head
from training.clip_init import ClipWeights, init_from_clip
from training.optim import BertAdam, ddp_average_, release_groups
from training.heads import Head, create_head
from training.plots import record_eval_details, write_plots
from training.runs import (ConfigError, DivergedError, RunError, RunLock, TrainConfig, append_csv, audio_for,
                           check_same_store, load_checkpoint, load_run, read_config, resolve_device,
                           save_checkpoint, save_head, truncate_csv, write_json)

# TrainConfig fields that say how a run executes, not what it learns: a resumed run takes
# new values of these (and says so); any other differing value is refused by `vtr train`
RESUME_MAY_CHANGE = ("device", "resident", "stream", "compile", "eval_batch_size")

# training steps between reads of the loss (each read waits for the device to finish)
SYNC_STEPS = 32


def silent_audio(store: str, head_name: str) -> str | None:
    """Why the store's audio cannot train head ``head_name`` (None: some audio is done)."""
    from storage import DONE, open_group

    state = open_group(store, mode="r")["audio_state"][:]
    if (state == DONE).any():
        return None
    return f"{store}: head {head_name!r} reads audio, but the store's audio step is done for none of its videos"


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine to zero at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def optimizer_groups(head: Head, c: TrainConfig, from_clip: list[str]) -> list[dict]:
    """The head's AdamW groups, each split so the tensors in ``from_clip`` train at
    ``lr * clip_lr_scale`` (no split when the scale is 1: the groups stay the head's)."""
    groups = head.param_groups(c.lr, c.weight_decay)
    if c.clip_lr_scale == 1.0 or not from_clip:
        return groups
    params = dict(head.named_parameters())
    clip_ids = {id(params[n]) for n in from_clip if n in params}
    out = []
    for g in groups:
        own = [p for p in g["params"] if id(p) not in clip_ids]
        clip = [p for p in g["params"] if id(p) in clip_ids]
        out += [{**g, "params": own}] if own else []
        out += [{**g, "params": clip, "lr": g["lr"] * c.clip_lr_scale,
                 "group": g.get("group", "") + "+clip"}] if clip else []
    return out


def tail_groups(head: Head, c: TrainConfig) -> list[dict]:
    """The fine-tuned CLIP blocks' groups at ``clip_lr`` (none without a tail)."""
    tail = getattr(head, "tail", None)
    if tail is None:
        return []
    decay = [p for p in tail.parameters() if p.ndim >= 2]
    rest = [p for p in tail.parameters() if p.ndim < 2]
    return [{"params": decay, "lr": c.clip_lr, "weight_decay": c.weight_decay, "group": "clip_tail"},
            {"params": rest, "lr": c.clip_lr, "weight_decay": 0.0, "group": "clip_tail_no_decay"}]


def finetune_head(head: Head, store: str, c: TrainConfig, tail_clip: ClipWeights | None, init: dict,
                  log) -> tuple[Head, dict]:
    """``head`` under CLIP's last ``c.finetune_clip`` blocks and/or reading the template
    captions (``training.clip_finetune``), or itself when neither applies."""
    template = use_template(store, c.template_captions, log)
    if not c.finetune_clip and not template:
        return head, init
    if c.finetune_clip:
        if template:
            raise ConfigError("--finetune-clip with template captions needs their hidden states, which "
                              "extraction does not cache: set template_captions=off")
        check_finetune(store, c.finetune_clip)
        if tail_clip is None:
            raise ConfigError(f"--finetune-clip {c.finetune_clip} needs the CLIP weights file the store records")
    wrapped = wrap_head(head, c.finetune_clip, template, tail_clip.state if tail_clip else None,
                        quickgelu_of(store))
    if c.finetune_clip:
        log(f"fine-tuning CLIP's last {c.finetune_clip} block(s) of each tower at lr {c.clip_lr:g} "
            f"({tail_clip.path})")
        init = {**init, "tensors": ["base." + n for n in init["tensors"]],
                "finetune_clip": {"weights": tail_clip.path, "sha256": tail_clip.sha256, "k": c.finetune_clip}}
    return wrapped, init


def train(*args, **kwargs) -> dict:
    """Train ``head_name`` on the store's train split into run folder ``out`` (see
    ``_train``); the run folder's lock (``RunLock``) is held from the folder's creation to
    the end, and released however the run ends."""
    held: list[RunLock] = []
    try:
        return _train(*args, held=held, **kwargs)
    finally:
        for lock in held:
            lock.release()


def _train(store: str, head_name: str, out: str, head_overrides: dict | None = None,
           config: TrainConfig | None = None, resume: bool = False, progress: bool = True,
           log=print, clip: ClipWeights | None = None, score_test: bool = True,
           allow_silent: bool = False, held: list | None = None,
           tail_clip: ClipWeights | None = None) -> dict:
    """Train ``head_name`` on the store's train split into run folder ``out``.

    Returns ``{"best_epoch", "val": report or None, "test": report or None}``.
    ``resume`` continues an interrupted run from its last finished epoch with the
    configuration saved in the run (the arguments given now are ignored). ``clip``:
    initialise the head's transformers from these CLIP weights (``training.clip_init``);
    None starts them at random. ``score_test=False`` leaves the test split unscored
    (``training.sweep`` scores only the setting it picks). A head that reads audio is
    refused on a store whose audio step has no done video, unless ``allow_silent`` (then
    the run's config records a warning). ``tail_clip``: the CLIP weights whose last
    ``config.finetune_clip`` blocks are fine-tuned (``training.clip_finetune``).
    """
    cfg_path = os.path.join(out, "config.json")
    if resume:
        if not os.path.exists(cfg_path):
            raise RunError(f"{out}: nothing to resume (no config.json)")
        saved = read_config(out)
        check_same_store(out, saved, store)
        head_name, head_overrides = saved["head"], saved["head_config"]
        # only how the run executes may change on resume (vtr train refuses the rest)
        changed = {k: v for k, v in (config.__dict__ if config else {}).items()
                   if k in RESUME_MAY_CHANGE and v != saved["train"].get(k)}
        for k, v in changed.items():
            log(f"resume: {k} {v!r} applied (the run had {saved['train'].get(k)!r})")
        config = TrainConfig(**{**saved["train"], **changed})
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
    try:
        head = create_head(head_name, head_overrides, dim=layout.dim, audio_dim=layout.audio_dim,
                           max_frames=layout.n_frames).to(device)
    except (KeyError, ValueError) as e:  # the head's own config checks: bad user input
        raise ConfigError(e.args[0] if e.args else str(e)) from None
    if resume:
        init = saved.get("init", {"from": "random", "tensors": []})
    elif clip is not None:
        names = init_from_clip(head, clip.state)
        init = {"from": "clip", "weights": clip.path, "sha256": clip.sha256, "tensors": names}
        log(f"initialised {len(names)} tensors from CLIP ({clip.path})")
    else:
        init = {"from": "random", "tensors": []}
    warnings = list(saved.get("warnings", [])) if resume else []
    if "audio" in head.text_fields + head.video_fields + head.loss_fields and not resume:
        silent = silent_audio(store, head_name)
        if silent and not allow_silent:
            raise RunError(f"{silent}; pass --allow-silent to train on zero audio anyway")
        if silent:
            warnings.append(f"trained with --allow-silent: {silent}")
            log(f"warning: {warnings[-1]}")
    if not resume:  # issue 26: CLIP's last blocks and/or the template captions in front of the head
        head, init = finetune_head(head, store, c, tail_clip, init, log)
        head.to(device)
    fields = head.text_fields + head.video_fields
    train_data = select_split(store, "train")
    try:
        val_data = select_split(store, "val")
    except EmptySplitError as e:
        val_data = None
        if read_attrs(store).get("n_val") == 0:
            log("note: the store was extracted with --n-val 0 (no validation split): selecting the last epoch")
        else:
            log(f"note: {e}; selecting the last epoch")
    else:
        if val_data.n_videos < MIN_VAL_VIDEOS:
            log(f"warning: val has {val_data.n_videos} video(s), under {MIN_VAL_VIDEOS}: "
                "the best epoch on val is mostly chance")
    os.makedirs(out, exist_ok=True)
    if held is not None:
        held.append(RunLock(out))
    if not resume:
        if os.path.exists(cfg_path):  # a run that finished while this one was starting
            raise RunError(f"{out}: a run already exists there (pass --resume to continue it)")
        write_json(cfg_path, {"head": head.name, "head_config": dataclasses.asdict(head.config),
                              "train": dataclasses.asdict(c), "store": store_identity(store),
                              "init": init, **({"warnings": warnings} if warnings else {})})
    audio = audio_for(fields, store, out, c.audio_tokens, progress)
    loss_only = tuple(f for f in head.loss_fields if f not in fields)
    loader = train_batches(store, train_data, fields + loss_only, c.batch_size, device, audio,
                           resident=c.resident, stream=c.stream, log=log)

    # the real count of every epoch's batches, so the cosine reaches zero at the last step
    # (not n_captions // batch_size: captions that wait for a batch without their video add batches)
    n_batches = [loader.n_batches(c.seed, epoch) for epoch in range(c.epochs)]
    total = sum(n_batches)
    groups = optimizer_groups(head, c, init["tensors"]) + tail_groups(head, c)
    if c.optimizer == "bertadam":  # the schedule is inside the optimiser (training.optim)
        opt = BertAdam(release_groups(head, groups, c.weight_decay), lr=c.lr, warmup=c.warmup, t_total=total,
                       b1=c.beta1, b2=c.beta2, e=c.eps, weight_decay=c.weight_decay, max_grad_norm=c.grad_clip)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        opt = torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total, int(c.warmup * total)))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype(device, c.amp, training=True) == torch.float16)
    start_epoch, best_score, best_epoch, step = 0, -math.inf, -1, 0
    if resume and (state := load_checkpoint(out, head, opt, sched, scaler, device)) is not None:
        start_epoch, best_score, best_epoch, step = (state["epoch"] + 1, state["best_score"],
                                                     state["best_epoch"], state["step"])
        log(f"resuming {out} after epoch {start_epoch} of {c.epochs}")
    truncate_csv(os.path.join(out, "metrics.csv"), start_epoch - 1)

    def forward_loss(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        t, v = head.encode_text(batch), head.encode_video(batch)
        return head.loss(head.similarity(t, v), batch, t, v)

    step_loss = torch.compile(forward_loss) if c.compile else forward_loss

    from torch.utils.tensorboard import SummaryWriter
    tb = SummaryWriter(os.path.join(out, "tb"), purge_step=step)

    def read_losses(pending: list[torch.Tensor], last_step: int, epoch: int) -> list[float]:
        """The losses of the steps up to ``last_step``, read in one host sync; the first
        that is not finite stops the run, naming its step."""
        values = torch.stack(pending).float().tolist() if pending else []
        for i, x in enumerate(values):
            at = last_step - len(values) + i
            if not math.isfinite(x):
                raise DivergedError(f"{out}: loss is {x} at epoch {epoch + 1}, step {at}")
            tb.add_scalar("train/loss", x, at + 1)
        pending.clear()
        return values

    val_report = None
    for epoch in range(start_epoch, c.epochs):
        head.train()
        t0, losses, pending = time.perf_counter(), [], []
        bar = tqdm(loader.epoch(c.seed, epoch), total=n_batches[epoch], desc=f"epoch {epoch + 1}/{c.epochs}",
                   disable=not progress, leave=False)
        for batch in bar:
            with autocast(device, c.amp, training=True):
                loss = step_loss(batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            ddp_average_(head.parameters(), c.grad_clip_scale)  # the releases' clip (training.optim)
            torch.nn.utils.clip_grad_norm_(head.parameters(), c.grad_clip)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            pending.append(loss.detach())
            # reading a loss waits for the device: every SYNC_STEPS steps, not every step
            if len(pending) == SYNC_STEPS:
                losses += read_losses(pending, step, epoch)
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
        losses += read_losses(pending, step, epoch)
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
        append_csv(os.path.join(out, "metrics.csv"), row)
        # ties go to the later epoch: a small val split saturates (one val video scores
        # R@1 100 from epoch 1 on) and the later head has trained longer
        if score >= best_score:
            best_score, best_epoch = score, epoch
            save_head(head, os.path.join(out, "head.safetensors"))
        save_checkpoint(out, head, opt, sched, scaler, epoch=epoch, step=step, best_score=best_score,
                        best_epoch=best_epoch)
        msg = f"epoch {epoch + 1}/{c.epochs}: loss {row['train_loss']:.4f}"
        if val_report is not None:
            m = val_report["multi"]["t2v"]
            msg += f", val t2v R@1 {m['R1']:.1f} R@5 {m['R5']:.1f} R@10 {m['R10']:.1f}"
        log(msg)
    tb.close()

    best, _ = load_run(out, device)
    record_eval_details(best, store, out, audio, device, c.eval_batch_size, c.amp)  # ranks, gates
    write_plots(out)
    result = {"best_epoch": best_epoch, "val": None, "test": None}
    if val_data is not None:
        result["val"] = evaluate_split(best, store, val_data, audio, device, c.eval_batch_size, c.amp)
    if not score_test:
        return result
    try:
        test_data = select_split(store, "test")
    except EmptySplitError as e:
        log(f"note: {e}; no test evaluation")
        return result
    result["test"] = evaluate_split(best, store, test_data, audio, device, c.eval_batch_size, c.amp)
    result["test"]["best_epoch"] = best_epoch
    write_json(os.path.join(out, "test_metrics.json"), result["test"])
    return result


__all__ = ["RESUME_MAY_CHANGE", "lr_factor", "optimizer_groups", "silent_audio", "train"]
