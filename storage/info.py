"""A store's summary: sizes, counts, step progress, provenance and failures."""
from __future__ import annotations

import os

import numpy as np

from storage.provenance import is_random_init
from storage.schema import DONE, FAILED, MISSING, STEPS
from storage.store import as_str, open_group, read_attrs
from storage.writers import failures

# Below this many val videos, R@1 on val moves in steps of 10 points or more and the best
# epoch is decided by ties: the hold-out aims for at least this many, `vtr train` warns.
MIN_VAL_VIDEOS = 10


def _disk_size(path: str) -> int | None:
    if "://" in path:
        return None
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def store_info(path: str | os.PathLike, storage_options: dict | None = None) -> dict:
    path = str(path)
    attrs = read_attrs(path, storage_options)
    group = open_group(path, mode="r", storage_options=storage_options)
    split = np.asarray(group["split"][:])
    steps = {}
    for step in STEPS:
        if f"{step}_state" not in group:  # a planned table (style rows) not created yet
            continue
        s = np.asarray(group[f"{step}_state"][:])
        steps[step] = {"done": int((s == DONE).sum()), "missing": int((s == MISSING).sum()),
                       "failed": int((s == FAILED).sum())}
    prov = attrs.get("provenance", {})
    warnings = [f"{g}: features made with RANDOM-INIT weights (not meaningful)"
                for g, rec in prov.items() if is_random_init(rec)]
    warnings += [f"{step}: {msg}" for step, msg in attrs.get("step_warnings", {}).items()]
    for step in STEPS:  # a done item's error text is a warning about it (a truncated video)
        if f"{step}_state" in group:
            s = np.asarray(group[f"{step}_state"][:])
            warned = np.flatnonzero((s == DONE) & (as_str(group[f"{step}_error"][:]) != ""))
            warnings += [f"{step} item {int(i)}: {as_str(group[f'{step}_error'][int(i)])}" for i in warned[:20]]
    return {
        "path": path,
        "dataset": attrs.get("dataset"),
        "schema_version": attrs.get("vtr_schema_version"),
        "created": attrs.get("created"),
        "data_root": attrs.get("data_root"),
        "bytes": _disk_size(path),
        "videos": int(split.size),
        "splits": {k: int((split == k).sum()) for k in ("train", "val", "test")},
        "captions": int(group["caption_text"].shape[0]),
        "layout": attrs.get("layout"),
        "steps": steps,
        "provenance": prov,
        "warnings": warnings,
        "n_val": attrs.get("n_val"),
        "annotation_warnings": attrs.get("annotation_warnings", []),
        "failures": failures(path, storage_options),
    }


def failure_class(step: str, error: str) -> str:
    """The class a crawl failure was recorded with (``crawl [permanent] ...``); the other
    steps' failures are "local" (the file, ffmpeg, the model), a crawl without a class
    (no URL to crawl, probe not done) "other"."""
    if error.startswith("crawl [") and "]" in error:
        return error[len("crawl ["):error.index("]")]
    return "other" if step == "crawl" else "local"


def _n_val(n_val: int | None) -> str:
    if n_val is None:
        return "the release's val list (or not recorded)"
    return "0 (full training split; training selects the last epoch)" if n_val == 0 else str(n_val)


def format_info(info: dict, max_failures: int = 20) -> str:
    size = info["bytes"]
    size_s = "remote" if size is None else f"{size / 2**20:.1f} MiB"
    lines = [
        f"store     {info['path']}  ({size_s}, schema v{info['schema_version']}, created {info['created']})",
        f"dataset   {info['dataset']}  data root: {info['data_root'] or '-'}",
        f"videos    {info['videos']}  (train {info['splits']['train']}, val {info['splits']['val']}, "
        f"test {info['splits']['test']})   captions {info['captions']}",
        f"n_val     {_n_val(info.get('n_val'))}",
        "",
        f"{'step':<10}{'done':>8}{'missing':>9}{'failed':>8}",
    ]
    for step, c in info["steps"].items():
        lines.append(f"{step:<10}{c['done']:>8}{c['missing']:>9}{c['failed']:>8}")
    lines.append("")
    if info["provenance"]:
        lines.append("provenance")
        for g, rec in info["provenance"].items():
            sha = rec.get("weights_sha256", "?")
            lines.append(f"  {g:<8} {rec.get('model', '?')}  weights {rec.get('weights', '?')}  "
                         f"sha256 {sha[:16] if sha != 'RANDOM-INIT' else sha}")
    else:
        lines.append("provenance: no features written yet")
    if 0 < info["splits"]["val"] < MIN_VAL_VIDEOS:
        lines.append(f"NOTE: val has {info['splits']['val']} video(s), under {MIN_VAL_VIDEOS}: "
                     "the best epoch on val is mostly chance")
    for w in info["warnings"]:
        lines.append(f"WARNING: {w}")
    notes = info.get("annotation_warnings", [])
    if notes:
        lines.append(f"annotation warnings ({len(notes)}): items left out or files chosen while reading")
        lines += [f"  {w}" for w in notes[:max_failures]]
    fails = info["failures"]
    if fails:
        lines.append("")
        by_class: dict[str, int] = {}
        for f in fails:
            c = failure_class(f["step"], f["error"])
            by_class[c] = by_class.get(c, 0) + 1
        lines.append(f"failures ({len(fails)}): " + ", ".join(f"{c} {n}" for c, n in sorted(by_class.items())))
        for f in fails[:max_failures]:
            lines.append(f"  {f['step']:<9} {f['item']:<14} {f['error']}")
        if len(fails) > max_failures:
            lines.append(f"  ... and {len(fails) - max_failures} more (vtr store info --json)")
    return "\n".join(lines)
