"""Plant each known bug in a scratch copy of the tree and check that its named test fails.

These are the bugs a hostile pass once planted unseen (issue 25): realistic slips in a
crawl, a window, a front end, a gate, a rank, a join. Each must make the tests named next
to it fail; a plant whose text is no longer in the code is reported, not skipped silently,
so a refactor that moves the code has to move its plant too. Not part of `make test`
(about 6 minutes); `make plant-bugs` runs it, or ``scripts/plant_bugs.py NAME ...`` some.
Prints a table of bug, test, outcome and seconds; exits 1 if any bug went unnoticed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plant:
    name: str
    bug: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


PLANTS = (
    Plant("crawl-failed-as-done", "a failed crawl recorded as done (audio_source none, no error)",
          "flows/steps.py",
          'yield ItemResult(j, None, f"crawl [{r.error_class}] {url[j]}: {r.error}")',
          'yield ItemResult(j, {"audio_source": "none", "audio_path": ""})',
          ("tests/flows/test_crawl_failures.py",)),
    Plant("no-url-as-done", "a silent video without URL recorded as done",
          "flows/steps.py",
          'yield ItemResult(j, None, "no audio stream and no URL to crawl it from")',
          'yield ItemResult(j, {"audio_source": "none", "audio_path": ""})',
          ("tests/flows/test_crawl_failures.py",)),
    Plant("failed-never-retried", "failed items never retried by the next run",
          "storage/writers.py",
          "todo = (s == MISSING) | ((s == FAILED) if retry_failed else False)",
          "todo = (s == MISSING)",
          ("tests/flows/test_crawl_failures.py",)),
    Plant("file-cut-without-ss", "`-ss start` dropped from the whole-file cut of file URLs",
          "extractors/crawl.py",
          "    if url.lower().startswith(\"file:\"):  # yt-dlp cannot fetch sections of file URLs\n"
          "        return _download(url, workdir, whole,",
          "    if url.lower().startswith(\"file:\"):  # yt-dlp cannot fetch sections of file URLs\n"
          "        return _download(url, workdir, length,",
          ("tests/extractors/test_crawl.py::test_file_url_window_is_cut_from_start",)),
    Plant("fallback-without-ss", "`-ss start` dropped from the fallback for files that cannot be cut by seeking",
          "extractors/crawl.py",
          "        os.remove(os.path.join(workdir, f))\n    return _download(url, workdir, whole,",
          "        os.remove(os.path.join(workdir, f))\n    return _download(url, workdir, length,",
          ("tests/extractors/test_crawl.py::test_section_crawl_of_direct_media",)),
    Plant("fbank-ignores-std", "the AST front end ignores fbank_std",
          "extractors/ast_encoder.py", "mean=self.fbank_mean, std=self.fbank_std)", "mean=self.fbank_mean)",
          ("tests/extractors/test_ast_front_end.py",)),
    Plant("fbank-ignores-shift", "the AST front end ignores the frame shift (fit-1024 computes 10 ms)",
          "extractors/ast_encoder.py", "FbankConfig(shift=self.fbank_shift, ", "FbankConfig(",
          ("tests/extractors/test_ast_front_end.py",)),
    Plant("gate-averages-padding", "AVIGATE's gate input averages every frame slot, padded ones too",
          "training/heads/avigate.py", "u = torch.cat([masked_mean(f, mask), a_summary]",
          "u = torch.cat([f.mean(1), a_summary]",
          ("tests/training/test_formulas_avigate.py::test_gates_average_only_the_valid_frame_slots",)),
    Plant("ranks-block-local", "ranks_single takes the ground-truth column block-locally",
          "training/metrics.py", "gt = rows[np.arange(b - a), np.arange(a, b)]",
          "gt = rows[np.arange(b - a), np.arange(b - a)]",
          ("tests/training/test_metrics.py::test_ranks_past_the_first_block_match_brute_force",)),
    Plant("first-captions-last", "SplitData.first_captions picks each video's last caption",
          "training/data.py", "for row in range(self.n_captions - 1, -1, -1):",
          "for row in range(self.n_captions):",
          ("tests/training/test_data.py::test_first_captions_are_the_lowest_store_rows",)),
    Plant("batch-videos-sorted", "a batch's video rows sorted (frames of other captions' videos)",
          "training/data.py", 'videos = arrays["caption_video"][caps]',
          'videos = np.sort(arrays["caption_video"][caps])',
          ("tests/training/test_data.py::test_batch_frames_and_audio_belong_to_the_captions_video",)),
    Plant("clip-ln1-into-ln2", "CLIP's ln_1.weight copied into ln2",
          "training/clip_init.py", '"ln2.weight": "ln_2.weight"', '"ln2.weight": "ln_1.weight"',
          ("tests/training/test_clip_init.py::test_every_clip_tensor_of_a_layer_lands_by_name",)),
    Plant("release-not-owner", "the store lock's release() deletes the lock without checking it still owns it",
          "storage/lock.py", "if current is not None and current.run_id == self.run_id:", "if True:",
          ("tests/storage/test_lock_release.py",)),
)


def scratch_copy() -> Path:
    """The tracked files as they are in the working tree (uncommitted edits included)."""
    dest = Path(tempfile.mkdtemp(prefix="vtr-plant-"))
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    for rel in files.decode().split("\0"):
        if rel and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    return dest


def pytest(tree: Path, tests: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the copy before the installed tree
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                       cwd=tree, env=env, capture_output=True, text=True, timeout=900)
    return r, time.monotonic() - t


def run_plant(p: Plant, tree: Path) -> tuple[str, float]:
    """'caught', 'MISSED' or 'NOT APPLIED' (the old text is gone), and the tests' seconds."""
    path = tree / p.file
    original = path.read_text()
    if original.count(p.old) != 1:
        return f"NOT APPLIED ({original.count(p.old)} matches in {p.file})", 0.0
    path.write_text(original.replace(p.old, p.new))
    try:
        r, seconds = pytest(tree, list(p.tests))
    finally:
        path.write_text(original)
    if r.returncode == 1:
        failed = [ln.split()[1] for ln in r.stdout.splitlines() if ln.startswith("FAILED ")]
        return f"caught ({', '.join(f.split('::')[-1] for f in failed)})", seconds
    if r.returncode == 0:
        return "MISSED", seconds
    return f"ERROR (pytest exit {r.returncode}: {r.stdout.strip().splitlines()[-1:]})", seconds


def main(names: list[str]) -> int:
    known = {p.name: p for p in PLANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown plant(s) {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    chosen = [known[n] for n in names] or list(PLANTS)
    tree = scratch_copy()
    bad = 0
    try:
        # a test that fails anyway would count every bug as caught
        tests = list(dict.fromkeys(t for p in chosen for t in p.tests))
        r, seconds = pytest(tree, tests)
        if r.returncode != 0:
            print(f"the tests fail without any bug planted ({seconds:.0f} s):\n{r.stdout[-3000:]}", file=sys.stderr)
            return 1
        print(f"without a bug: {len(tests)} test selections pass ({seconds:.0f} s)\n", flush=True)
        print("| bug planted | test that must fail | outcome | s |\n|---|---|---|---|", flush=True)
        for p in chosen:
            outcome, seconds = run_plant(p, tree)
            bad += not outcome.startswith("caught")
            print(f"| {p.bug} (`{p.name}`) | {', '.join(f'`{t}`' for t in p.tests)} | {outcome} | {seconds:.0f} |",
                  flush=True)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
