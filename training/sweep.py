"""Grid search chosen on val only: train every setting of a grid, pick the best by the
val selection score (``training.evaluate.selection_score``), and score test once, for
the chosen setting only (the releases picked on test: the bug this exists to avoid).

``out`` gets one run folder per setting, ``sweep.json`` (every setting's val report, the
choice, its test report) and ``sweep.md`` (the table).
"""
from __future__ import annotations

import dataclasses
import itertools
import os

from training.clip_init import ClipWeights
from training.data import EmptySplitError, select_split
from training.evaluate import evaluate_run, selection_score
from training.runs import ConfigError, TrainConfig, split_settings, write_json
from training.trainer import train


def grid_settings(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the grid's order."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _run_name(setting: dict) -> str:
    return "_".join(f"{k}={v}" for k, v in setting.items()).replace("/", "-") or "default"


def check_grid(grid: dict[str, list], head: str) -> None:
    """Every key a ``TrainConfig`` field or an option of ``head`` (the error names the
    valid keys), each with at least one value."""
    if not grid or any(not v for v in grid.values()):
        raise ConfigError("--grid wants key=v1,v2,... with at least one value")
    split_settings(dict.fromkeys(grid), [head])


def run_sweep(store: str, head: str, grid: dict[str, list], out: str, config: TrainConfig | None = None,
              overrides: dict | None = None, clip: ClipWeights | None = None, progress: bool = True,
              log=print) -> dict:
    """Train ``head`` once per setting of ``grid`` (``TrainConfig`` fields or head
    options -> values) on top of ``config`` and ``overrides``; returns what ``sweep.json``
    holds. A grid key the head and ``TrainConfig`` lack names the valid keys."""
    check_grid(grid, head)
    try:
        select_split(store, "val")
    except EmptySplitError as e:
        raise ConfigError(f"a sweep chooses on val: {e}") from None
    config = config or TrainConfig()
    os.makedirs(out, exist_ok=True)
    rows = []
    for setting in grid_settings(grid):
        train_part, head_part = split_settings(setting, [head])
        cfg = dataclasses.replace(config, **train_part)
        run = os.path.join(out, _run_name(setting))
        log(f"sweep: {setting}")
        res = train(store, head, run, {**(overrides or {}), **head_part}, cfg, progress=progress, log=log,
                    clip=clip, score_test=False)
        rows.append({"setting": setting, "run": run, "best_epoch": res["best_epoch"],
                     "val_score": selection_score(res["val"]), "val": res["val"]})
    # ties go to the earlier setting: the grid's first value is the default to keep
    chosen = max(range(len(rows)), key=lambda i: (rows[i]["val_score"], -i))
    test = None
    try:
        test = evaluate_run(store, rows[chosen]["run"], "test", config.device, progress=progress)
    except EmptySplitError as e:
        log(f"note: {e}; no test evaluation")
    result = {"store": store, "head": head, "grid": grid, "overrides": overrides or {},
              "train": dataclasses.asdict(config), "runs": rows, "chosen": chosen, "test": test}
    result["markdown"] = sweep_table(result)
    write_json(os.path.join(out, "sweep.json"), result)
    with open(os.path.join(out, "sweep.md"), "w") as f:
        f.write(result["markdown"] + "\n")
    return result


def sweep_table(result: dict) -> str:
    """Markdown: one row per setting (val t2v R@1/5/10, the selection score), the chosen
    one marked, then its test t2v and v2t R@1/5/10."""
    keys = list(result["grid"])
    lines = ["| " + " | ".join(keys) + " | val R@1 | val R@5 | val R@10 | val score | chosen |",
             "|" + "---|" * (len(keys) + 5)]
    for i, r in enumerate(result["runs"]):
        m = r["val"]["multi"]["t2v"]
        cells = [str(r["setting"][k]) for k in keys] + [f"{m['R1']:.1f}", f"{m['R5']:.1f}", f"{m['R10']:.1f}",
                                                        f"{r['val_score']:.1f}", "**yes**" if i == result["chosen"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    test = result["test"]
    if test is not None:
        t, v = test["multi"]["t2v"], test["multi"]["v2t"]
        lines.append("")
        lines.append(f"test, chosen setting only ({result['runs'][result['chosen']]['setting']}): "
                     f"t2v R@1 {t['R1']:.1f} R@5 {t['R5']:.1f} R@10 {t['R10']:.1f}; "
                     f"v2t R@1 {v['R1']:.1f} R@5 {v['R5']:.1f} R@10 {v['R10']:.1f}")
    return "\n".join(lines)


__all__ = ["check_grid", "grid_settings", "run_sweep", "sweep_table"]
