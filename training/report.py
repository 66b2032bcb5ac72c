"""`vtr report RUN`: one self-contained HTML page (``RUN/report.html``) from a run folder:
the run's configuration, the store's split sizes, the test metrics JSON as a table, the
last epoch's numbers and the PNG plots of ``training.plots`` (rewritten first); what a
run does not hold yet (test metrics while it trains) is named as missing. Images are referenced
by relative path, so the folder can be copied or served as it is."""
from __future__ import annotations

import html
import json
import os

from storage import StoreError
from storage.info import MIN_VAL_VIDEOS
from training.data import EmptySplitError, select_split
from training.metrics import KEYS
from training.plots import PLOT_DIR, write_plots
from training.runs import read_config, read_metrics_csv

PLOTS = [("loss.png", "Training loss"), ("recall_at_1.png", "Validation R@1 per epoch"),
         ("recall_at_k.png", "Recall at K"), ("gates.png", "Gate values per layer")]

# everything wraps or shrinks to the window: long paths break anywhere, images scale down
STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px;color:#222;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots figure{margin:0;max-width:100%}
img{max-width:100%;height:auto}pre{white-space:pre-wrap}
.warn{background:#fff3cd;padding:.6em;border:1px solid #e0c36a}code{background:#f5f5f5}"""


def _metrics_table(report: dict) -> str:
    head = "<tr><th>protocol</th><th>direction</th>" + "".join(f"<th>{k}</th>" for k in KEYS) + "</tr>"
    rows = []
    for proto in ("single", "multi"):
        for d in ("t2v", "v2t"):
            m = report[proto][d]
            rows.append(f"<tr><td>{proto}</td><td>{d}</td>" + "".join(f"<td>{m[k]:.1f}</td>" for k in KEYS)
                        + "</tr>")
    return f"<table id='test-metrics'>{head}{''.join(rows)}</table>"


def split_sizes(store: str) -> dict[str, int] | None:
    """Videos per split that training can use (frames done, a caption with text done);
    ``None`` when the store is not there (moved, or remote and unreachable)."""
    try:
        sizes = {}
        for name in ("train", "val", "test"):
            try:
                sizes[name] = select_split(store, name).n_videos
            except EmptySplitError:
                sizes[name] = 0
        return sizes
    except (StoreError, OSError):
        return None


def _splits_html(store: str) -> str:
    sizes = split_sizes(store)
    if sizes is None:
        return f"<p class='warn' id='splits'>Store <code>{html.escape(store)}</code> not found: split sizes unknown.</p>"
    text = ", ".join(f"{k} {v}" for k, v in sizes.items())
    out = f"<p id='splits'>Split sizes (videos with features): {text}.</p>"
    if sizes["val"] < MIN_VAL_VIDEOS:
        out += (f"<p class='warn'>val has {sizes['val']} video(s), under {MIN_VAL_VIDEOS}: the best "
                "epoch on val is mostly chance.</p>")
    return out


def render_report(run: str, out: str | None = None) -> tuple[str, list[str]]:
    """Write the report of what the run holds; returns its path and what is missing
    (e.g. "test metrics" while training runs). Raises ``RunError`` for a folder that is
    not a run."""
    cfg = read_config(run)
    out = out or os.path.join(run, "report.html")
    write_plots(run)  # cheap, and current with the run's files
    e = html.escape
    store = str(cfg["store"].get("path"))
    missing = []
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>vtr run {e(run)}</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>Run <code>{e(os.path.abspath(run))}</code></h1>",
             f"<p>head <b>{e(cfg['head'])}</b> on store <code>{e(store)}</code> "
             f"(dataset {e(str(cfg['store'].get('dataset')))}, {cfg['store'].get('n_videos')} videos, "
             f"{cfg['store'].get('n_captions')} captions)</p>", _splits_html(store)]
    test_path = os.path.join(run, "test_metrics.json")
    if os.path.exists(test_path):
        with open(test_path) as f:
            rep = json.load(f)
        best = rep.get("best_epoch")
        parts.append(f"<h2>Test metrics</h2><p>{rep['n_videos']} videos, {rep['n_captions']} captions"
                     + (f"; best epoch on val: {best + 1}" if best is not None else "") + "</p>")
        parts.append(_metrics_table(rep))
    else:
        missing.append("test metrics")
        parts.append("<p class='warn' id='missing-test'>No test metrics yet (test_metrics.json): training "
                     "has not finished, or the store has no test split.</p>")
    figs = [(p, t) for p, t in PLOTS if os.path.exists(os.path.join(run, PLOT_DIR, p))]
    if figs:
        rel = os.path.relpath(os.path.join(run, PLOT_DIR), os.path.dirname(os.path.abspath(out)))
        parts.append("<h2>Plots</h2><div class='plots'>" + "".join(
            f"<figure><img src='{e(os.path.join(rel, p))}' alt='{e(t)}'><figcaption>{e(t)}</figcaption></figure>"
            for p, t in figs) + "</div>")
    m = read_metrics_csv(run)
    if m.get("epoch") is not None and len(m["epoch"]):
        # metrics.csv counts epochs from 0 (resume truncates by it); people count from 1
        last = {k: float(v[-1]) + (k == "epoch") for k, v in m.items()}
        parts.append(f"<h2>Last epoch ({int(last['epoch'])} of {cfg['train'].get('epochs')})</h2>"
                     "<table id='last-epoch'>"
                     + "".join(f"<tr><td>{e(k)}</td><td>{v:.4g}</td></tr>" for k, v in last.items())
                     + "</table>")
    else:
        missing.append("epochs (no epoch finished)")
    if missing:
        parts.insert(3, f"<p class='warn' id='missing'>Missing: {e(', '.join(missing))}.</p>")
    parts.append("<h2>Configuration</h2><pre>" + e(json.dumps({k: cfg[k] for k in ("head_config", "train")},
                                                             indent=2)) + "</pre></body></html>")
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    os.replace(tmp, out)
    return out, missing
