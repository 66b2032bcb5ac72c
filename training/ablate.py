"""`vtr ablate`: every head trained side by side on one store, one comparison table.

Each variant (``VARIANTS``: a head and its overrides) is trained with the same seed and
``TrainConfig`` into ``OUT/runs/<variant>``, then scored on the test split: R@1/5/10,
MdR and MnR in both directions by the store's protocol (``training.metrics.PRIMARY``: one
caption per video, 1k-A style, or CLIP4Clip's multi-sentence one), the style-shift
gap (mean over rewrite styles of plain minus rewritten text->video R@1, when the store
holds the style step's captions), the "other writers" gap (each video's first caption
against its other captions), mean epoch seconds and trainable parameters. Writes
``OUT/ablation.md`` and ``OUT/ablation.json``. Finished runs are re-used (a re-run after
an interruption continues where it stopped); a run folder made with another
configuration is an error, never overwritten.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os

import numpy as np

from storage import StoreError
from training.data import EmptySplitError, select_split
from training.heads import head_config, head_option, head_options
from training.metrics import PRIMARY, PROTOCOL_NOTES
from training.runs import ConfigError, RunError, TrainConfig, audio_for, load_run, read_config, resolve_device
from training.style import style_report, writers_report
from training.trainer import train

# variant -> (head, overrides)
VARIANTS: dict[str, tuple[str, dict]] = {
    "meanpool": ("meanpool", {}),
    "avigate": ("avigate", {}),
    "waver/none": ("waver", {"distill": "none"}),
    "waver/injection": ("waver", {"distill": "injection"}),
    "waver/kd": ("waver", {"distill": "kd"}),
    "avigate+waver/injection": ("avigate+waver", {"distill": "injection"}),
    "avigate+waver/kd": ("avigate+waver", {"distill": "kd"}),
}


def variant_overrides(names: list[str], common: dict) -> dict[str, dict]:
    """Each variant's overrides with ``common`` options added to the heads that have them;
    an option no chosen head has is an error (it would silently do nothing)."""
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown} (known: {', '.join(VARIANTS)})")
    out, used, known = {}, set(), set()
    for n in names:
        head, ov = VARIANTS[n]
        known |= set(head_options(head))
        mine = {k: v for k, v in common.items() if head_option(head, k)}
        used |= set(mine)
        out[n] = {**mine, **ov}
    if set(common) - used:
        raise ConfigError(f"no chosen head has option(s) {sorted(set(common) - used)} "
                          f"(their options: {', '.join(sorted(known))})")
    return out


def _run_dir(out: str, variant: str) -> str:
    return os.path.join(out, "runs", variant.replace("/", "-"))


def _train_or_reuse(store: str, head: str, run: str, overrides: dict, config, progress: bool, log) -> None:
    if os.path.exists(os.path.join(run, "config.json")):
        saved = read_config(run)
        want_train = dataclasses.asdict(config)
        same_head = saved["head"] == head and dataclasses.asdict(
            head_config(head, {**saved["head_config"], **overrides})) == saved["head_config"]
        if not same_head or saved["train"] != want_train:
            raise RunError(f"{run}: a run with another configuration is there (remove it, or use another --out)")
        if os.path.exists(os.path.join(run, "test_metrics.json")):
            return
        train(store, head, run, resume=True, progress=progress, log=log)
        return
    train(store, head, run, overrides, config, progress=progress, log=log)


def _gaps(head, store: str, run: str, config, device) -> tuple[dict | None, dict | None]:
    """(style report or None when the store has no style step, writers report or None)."""

    data = select_split(store, "test")
    audio = audio_for(head.text_fields + head.video_fields, store, run, config.audio_tokens, False)
    try:
        rep = style_report(head, store, data, audio, device, config.eval_batch_size, config.amp)
        return rep, rep["writers"]
    except StoreError:
        return None, writers_report(head, store, data, audio, device, config.eval_batch_size, config.amp)


def run_ablation(store: str, out: str, config=None, variants: list[str] | None = None,
                 common: dict | None = None, progress: bool = True, log=print) -> dict:
    """Train and score every variant; returns (and writes) ``{"rows": [...], ...}``."""
    config = config or TrainConfig()
    names = list(variants or VARIANTS)
    overrides = variant_overrides(names, common or {})
    select_split(store, "train")  # fail before any training when the store cannot train
    try:
        select_split(store, "test")
    except EmptySplitError as e:
        raise StoreError(f"{store}: the ablation compares test scores, but {e}") from None
    device = resolve_device(config.device)
    os.makedirs(out, exist_ok=True)
    rows = []
    for n in names:
        head_name = VARIANTS[n][0]
        run = _run_dir(out, n)
        log(f"[{len(rows) + 1}/{len(names)}] {n} -> {run}")
        _train_or_reuse(store, head_name, run, overrides[n], config, progress, log)
        with open(os.path.join(run, "test_metrics.json")) as f:
            test = json.load(f)
        with open(os.path.join(run, "metrics.csv"), newline="") as f:
            epoch_s = [float(r["epoch_s"]) for r in csv.DictReader(f)]
        head, _ = load_run(run, device)
        style, writers = _gaps(head, store, run, config, device)
        rows.append({
            "variant": n, "head": head_name, "overrides": overrides[n], "run": run, "test": test,
            "style_gap": None if style is None else style["mean_gap"],
            "writers_gap": None if writers is None else writers["gap"],
            "style": style, "writers": writers,
            "epoch_s": float(np.mean(epoch_s)) if epoch_s else None,
            "params": int(sum(p.numel() for p in head.parameters() if p.requires_grad)),
        })
    result = {"store": os.path.abspath(store), "train": dataclasses.asdict(config), "rows": rows}
    table = format_table(rows)
    with open(os.path.join(out, "ablation.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(out, "ablation.md"), "w") as f:
        f.write(table + "\n")
    result["markdown"] = table
    return result


def _num(x, fmt: str = ".1f") -> str:
    return "n/a" if x is None else format(x, fmt)


def format_table(rows: list[dict]) -> str:
    """Markdown: test scores by the store's protocol, gaps, epoch seconds, parameters."""
    head = ("| variant | t2v R@1 | R@5 | R@10 | MdR | MnR | v2t R@1 | R@5 | R@10 | MdR | MnR "
            "| style gap | writers gap | epoch s | params |")
    lines = [head, "|" + "---|" * 15]
    protocol = rows[0]["test"].get("protocol", "single") if rows else "single"
    for r in rows:
        scores = r["test"][PRIMARY[protocol]]
        t2v, v2t = scores["t2v"], scores["v2t"]
        cells = [r["variant"]] + [_num(t2v[k]) for k in ("R1", "R5", "R10", "MdR", "MnR")] \
            + [_num(v2t[k]) for k in ("R1", "R5", "R10", "MdR", "MnR")] \
            + [_num(r["style_gap"]), _num(r["writers_gap"]), _num(r["epoch_s"], ".2f"), f"{r['params']:,}"]
        lines.append("| " + " | ".join(cells) + " |")
    n_v = rows[0]["test"]["n_videos"] if rows else 0
    lines.append("")
    lines.append(f"Test split, {n_v} videos, protocol {protocol}: {PROTOCOL_NOTES[protocol]}. Gaps: "
                 "text->video R@1 of the plain captions minus the style-rewritten ones (mean over styles; "
                 "n/a: the store has no style step) and minus the videos' other captions (writers).")
    return "\n".join(lines)


__all__ = ["VARIANTS", "format_table", "run_ablation", "variant_overrides"]
