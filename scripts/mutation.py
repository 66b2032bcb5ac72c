"""`make mutation [MODULE=training/metrics.py]`: mutation testing with mutmut, one module at
a time, against the test files that exercise it (``MODULES``), and the per-module table in
docs/mutation.md.

mutmut 3 reads its settings from the working directory and copies the tree into
``mutants/`` there; its first pass runs the selected tests once to learn which test covers
which function, and each mutant then runs only those tests. So each module gets its own
directory ``mutants/<module>/`` (a copy of the packages, the tests and pyproject.toml, plus
a ``setup.cfg`` naming the module and its tests): a module takes minutes, never the whole
suite. Surviving mutants are listed, with their diffs, in ``mutants/<module>/survivors.txt``;
the ones that are equivalent are explained by hand in docs/mutation.md.
``--recheck MODULE [PATTERN [TEST ...]]``: the last run's survivors (those whose names match
the pattern) against today's tests (or the named test files), after new tests were written;
what they kill is recorded and the module's row rewritten.
``--sample N MODULE ...``: N of each module's mutants, drawn with a fixed seed (a rerun draws
the same ones), for the modules of over a thousand mutants, which take hours on two cores
in full; the row gives the sample's size and its score's 95 % interval.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "training", "extractors", "flows", "vtr")
DOC = ROOT / "docs" / "mutation.md"

# module (a file, or a folder: every .py in it) -> the tests that exercise it, smallest first
MODULES: dict[str, list[str]] = {
    "training/metrics.py": ["tests/training/test_metrics.py"],
    "training/losses.py": ["tests/training/test_losses.py", "tests/training/test_formulas_avigate.py",
                           "tests/training/test_formulas_waver.py"],
    # the object-store side runs on fsspec filesystems in memory (test_lock_remote.py); the
    # moto server test starts a server per mutant, so it stays out
    "storage/lock.py": ["tests/storage/test_lock.py", "tests/storage/test_lock_release.py",
                        "tests/storage/test_lock_remote.py", "-k", "not s3_lock_object"],
    # the tests on media files build them first (a session fixture): the synthetic waves suffice
    "extractors/fbank.py": ["tests/extractors/test_audio_fbank.py", "-k",
                            "synthetic or non_positive or validation or shorter or crops or directly or messages"],
    "training/clip_init.py": ["tests/training/test_clip_init.py"],
    "storage/readers.py": ["tests/storage/test_readers.py", "tests/storage/test_check_export_info.py",
                           "tests/storage/test_store.py",
                           "tests/storage/test_integrity.py", "tests/storage/test_writers.py"],
    "storage/schema.py": ["tests/storage/test_store.py", "tests/storage/test_upgrade.py",
                          "tests/storage/test_check_export_info.py", "tests/flows/test_registry.py",
                          "tests/test_readme.py::test_store_doc_schema_table_matches_the_schema"],
    # not test_kill_midway.py: its SIGKILL runs take half a minute each, for every mutant
    "storage/writers.py": ["tests/storage/test_writers.py", "tests/storage/test_store.py"],
    # test_evaluate.py scores directly what test_learning.py's training runs reach in minutes
    "training/evaluate.py": ["tests/training/test_evaluate.py", "tests/training/test_metrics.py",
                             "tests/training/test_checkpoint.py"],
    # not the two whole training runs (torch.compile; every head on 64 frames): 20 s a mutant
    "training/data.py": ["tests/training/test_data.py", "tests/training/test_audio_tokens.py",
                         "tests/training/test_paragraph_multi.py", "tests/training/test_device_resident.py",
                         "-k", "not compiled_training_matches_eager and not every_head_trains_on_64"],
    # not the training runs of test_waver.py (a minute each, for every mutant they reach)
    "training/heads": ["tests/training/test_heads.py", "tests/training/test_formulas_avigate.py",
                       "tests/training/test_formulas_waver.py", "tests/training/test_waver.py",
                       "-k", "not learns and not beats_both_parents and not style_shift_gap"],
    "extractors/compress.py": ["tests/extractors/test_compress.py", "tests/extractors/test_truncated_video.py"],
    "extractors/annotations.py": ["tests/extractors/test_annotations.py", "tests/extractors/test_one_line_inputs.py"],
    "extractors/crawl.py": ["tests/extractors/test_crawl.py"],
    "extractors/frames.py": ["tests/extractors/test_frames.py"],
    "extractors/datasets": ["tests/extractors/datasets"],
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", -24: "timeout", 24: "timeout",
          152: "timeout", 255: "timeout", 5: "no tests", 33: "no tests"}
TABLE_START, TABLE_END = "<!-- mutation table: scripts/mutation.py writes it -->", "<!-- end of table -->"


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def prepare(module: str, work: Path) -> None:
    """A fresh copy of the packages and tests under ``work``, and its mutmut settings."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, work / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")
    shutil.copytree(ROOT / "docs", work / "docs")  # the schema's table in docs/store.md is tested
    only = f"{module}/*.py" if (ROOT / module).is_dir() else module
    tests = MODULES[module]
    (work / "setup.cfg").write_text(
        "[mutmut]\n"
        f"source_paths =\n    " + "\n    ".join(PACKAGES) + "\n"
        f"only_mutate = {only}\n"
        # a test may use any module: only this one is mutated, the rest copied as is
        "pytest_add_cli_args_test_selection =\n    " + "\n    ".join(tests) + "\n"
        "pytest_add_cli_args =\n    -p\n    no:cacheprovider\n"
        "use_git_change_detection = false\n"
        # mutmut runs the tests in its own copy: the schema's table test reads docs/store.md
        "also_copy =\n    docs\n"
        # each mutant forks from a server that has only collected the tests: forking the
        # process that ran them would inherit its torch/Dask thread pools, and hang
        "process_isolation = forkserver\n")


def counts(work: Path, module: str) -> tuple[Counter, list[str]]:
    """Statuses of the module's mutants (from mutmut's .meta files) and the survivors."""
    c: Counter = Counter()
    survivors = []
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        if not _in_module(meta.relative_to(work / "mutants").as_posix().removesuffix(".meta"), module):
            continue
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = STATUS.get(code, "suspicious" if code is not None else "not checked")
            c[status] += 1
            if status == "survived":
                survivors.append(name)
    return c, survivors


def tested(c: Counter) -> int:
    """The mutants a test ran against (not those no test reaches, nor those left unchecked)."""
    return c["killed"] + c["survived"] + c["timeout"] + c["suspicious"]


def score(c: Counter) -> float:
    n = tested(c)
    return 100.0 * (c["killed"] + c["timeout"]) / n if n else 0.0


def interval(c: Counter) -> float:
    """Half-width of the score's 95 % interval when the mutants were a sample (normal approximation)."""
    n = tested(c)
    p = score(c) / 100
    return 196.0 * math.sqrt(p * (1 - p) / n) if n else 0.0


def write_row(module: str, c: Counter, minutes: float, note: str = "") -> None:
    """Replace ``module``'s row of the table in docs/mutation.md (the other rows stay)."""
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(TABLE_START, 1)
    table, tail = rest.split(TABLE_END, 1)
    rows = {m: f"| `{m}` | not run yet | | | | | | |" for m in MODULES}
    for line in table.strip().splitlines()[2:]:
        m = re.match(r"\| `([^`]+)` \|", line)
        if m and m[1] in rows:
            cells = line.strip().strip("|").split("|")
            if len(cells) == 7:  # a row from before the "not reached" column
                cells.insert(5, " ")
            rows[m[1]] = "|" + "|".join(cells) + "|"
    sampled = c["not checked"] > 0
    total = (f"{sum(c.values()) - c['not checked']} of {sum(c.values())} (sample)" if sampled
             else f"{sum(c.values())}")
    shown = f"{score(c):.1f} ± {interval(c):.1f} %" if sampled else f"{score(c):.1f} %"
    rows[module] = (f"| `{module}` | {total} | {c['killed']} | {c['survived']} | {c['timeout']} | "
                    f"{c['no tests']} | {shown} | {minutes:.1f} min{note}, {time.strftime('%Y-%m-%d')} |")
    lines = ["| module | mutants | killed | survived | timed out | not reached | score | run |",
             "|---|---:|---:|---:|---:|---:|---:|---|", *rows.values()]
    DOC.write_text(head + TABLE_START + "\n" + "\n".join(lines) + "\n" + TABLE_END + tail, encoding="utf-8")


def mutant_names(work: Path, module: str) -> list[str]:
    return sorted(n for meta in (work / "mutants").rglob("*.py.meta")
                  if _in_module(meta.relative_to(work / "mutants").as_posix().removesuffix(".meta"), module)
                  for n in json.loads(meta.read_text())["exit_code_by_key"])


def _in_module(rel: str, module: str) -> bool:
    return rel == module or rel.startswith(module.rstrip("/") + "/")


def run_module(module: str, max_children: int, sample: int | None = None) -> None:
    work = ROOT / "mutants" / slug(module)
    prepare(module, work)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the copy's code must win
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")  # each mutant's tests are small; the cores are shared
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    t0 = time.time()
    print(f"== {module}: mutmut over {' '.join(MODULES[module])}", flush=True)
    mutmut = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)]
    with open(work / "mutmut.log", "w") as log:
        chosen: list[str] = []
        if sample:
            # mutmut names its mutants only once it made them: a first run that matches none
            # makes them and records which tests reach which function (kept for the next run)
            subprocess.run([*mutmut, "no-such-mutant"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
            names = mutant_names(work, module)
            if not names:
                sys.exit(f"{module}: mutmut made no mutants; see {work / 'mutmut.log'}")
            chosen = sorted(random.Random(0).sample(names, min(sample, len(names))))
            print(f"   a sample of {len(chosen)} of its {len(names)} mutants", flush=True)
        rc = subprocess.run([*mutmut, *chosen], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    minutes = (time.time() - t0) / 60
    (work / "run.json").write_text(json.dumps({"minutes": minutes}))
    c, survivors = counts(work, module)
    if rc != 0 or not c:
        print(f"{module}: mutmut failed (exit code {rc}); see {work / 'mutmut.log'}", file=sys.stderr)
        sys.exit(1)
    with open(work / "survivors.txt", "w") as f:
        for name in survivors:
            diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work, env=env,
                                  capture_output=True, text=True).stdout
            f.write(f"### {name}\n{diff}\n")
    write_row(module, c, minutes)
    drawn = f"{sum(c.values()) - c['not checked']} of {sum(c.values())} mutants drawn" if sample else \
        f"{sum(c.values())} mutants"
    print(f"{module}: {drawn}, {c['killed']} killed, {c['survived']} survived, "
          f"{c['timeout']} timed out: {score(c):.1f} %{f' ± {interval(c):.1f}' if sample else ''} in {minutes:.1f} min "
          f"(survivors: {work / 'survivors.txt'})", flush=True)


def recheck(module: str, pattern: str = "*", tests: list[str] | None = None) -> None:
    """The last run's survivors of ``module`` against today's tests, without a new run:
    each is applied to the copy's source (``mutmut apply``), the tests run there (the
    module's selection, or ``tests`` from it), and the copy restored. A survivor now killed
    is recorded as killed in the run's results, and the module's row of the table is
    rewritten; the ones still surviving are printed. Refused when the module's source
    changed since the run (its mutants would be of old code)."""
    import fnmatch
    work = ROOT / "mutants" / slug(module)
    sources = sorted((work / module).rglob("*.py")) if (work / module).is_dir() else [work / module]
    if not sources or not sources[0].exists():
        sys.exit(f"{module}: no run under {work} (run it first)")
    if any(p.read_bytes() != (ROOT / p.relative_to(work)).read_bytes() for p in sources):
        sys.exit(f"{module}: the source changed since its run; run it again (make mutation MODULE={module})")
    _, survivors = counts(work, module)
    survivors = [n for n in survivors if fnmatch.fnmatch(n, pattern)]
    if not survivors:
        sys.exit(f"{module}: no survivors match {pattern!r}")
    shutil.rmtree(work / "tests")
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.time()
    still, killed = [], []
    # a stopped recheck (timeout, kill) must leave the copy's source as it was, and keep its kills
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for name in survivors:
        saved = {p: p.read_bytes() for p in sources}
        try:
            subprocess.run([sys.executable, "-m", "mutmut", "apply", name], cwd=work, env=env, check=True,
                           capture_output=True)
            rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *(tests or MODULES[module])], cwd=work, env=env, capture_output=True).returncode
        finally:
            for p, data in saved.items():
                p.write_bytes(data)
        print(f"{'killed  ' if rc else 'survives'} {name}", flush=True)
        (killed if rc else still).append(name)
        if rc:
            _record_killed(work, name)
    run = json.loads((work / "run.json").read_text()) if (work / "run.json").exists() else {"minutes": 0.0}
    c, _ = counts(work, module)
    write_row(module, c, run["minutes"], f" + recheck {(time.time() - t0) / 60:.1f} min")
    print(f"{module}: {len(killed)} of {len(survivors)} survivors now killed: {score(c):.1f} %")


def _record_killed(work: Path, name: str) -> None:
    for meta in (work / "mutants").rglob("*.py.meta"):
        d = json.loads(meta.read_text())
        if name in d["exit_code_by_key"]:
            d["exit_code_by_key"][name] = 1
            meta.write_text(json.dumps(d))
            return


def main(argv: list[str]) -> None:
    if argv[:1] == ["--recheck"]:  # --recheck MODULE [MUTANT-NAME-PATTERN [TEST ...]]
        recheck(argv[1].rstrip("/"), *argv[2:3], tests=argv[3:] or None)
        return
    sample = None
    if argv[:1] == ["--sample"]:
        if len(argv) < 2 or not argv[1].isdigit() or int(argv[1]) < 1:
            sys.exit("--sample N: N is the number of mutants to draw per module (a positive integer)")
        sample, argv = int(argv[1]), argv[2:]
    modules = [m.rstrip("/") for m in argv] or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        sys.exit(f"unknown module(s) {', '.join(unknown)} (known: {', '.join(MODULES)})")
    children = int(os.environ.get("MUTATION_CHILDREN", "2"))
    for m in modules:
        run_module(m, children, sample)


if __name__ == "__main__":
    main(sys.argv[1:])
