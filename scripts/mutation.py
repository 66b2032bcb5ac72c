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
``--recheck MODULE [PATTERN]``: the last run's survivors (those whose names match the
pattern) against today's tests, after new tests were written.
"""
from __future__ import annotations

import json
import os
import re
import shutil
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
    "storage/lock.py": ["tests/storage/test_lock.py", "tests/storage/test_lock_release.py", "-k", "not s3"],
    # the tests on media files build them first (a session fixture): the synthetic waves suffice
    "extractors/fbank.py": ["tests/extractors/test_audio_fbank.py", "-k",
                            "synthetic or non_positive or validation or shorter or crops or directly or messages"],
    "training/clip_init.py": ["tests/training/test_clip_init.py"],
    "storage/readers.py": ["tests/storage/test_check_export_info.py", "tests/storage/test_store.py"],
    "storage/schema.py": ["tests/storage/test_store.py", "tests/storage/test_upgrade.py",
                          "tests/storage/test_check_export_info.py"],
    # not test_kill_midway.py: its SIGKILL runs take half a minute each, for every mutant
    "storage/writers.py": ["tests/storage/test_writers.py", "tests/storage/test_store.py"],
    "training/evaluate.py": ["tests/training/test_metrics.py", "tests/training/test_checkpoint.py",
                             "tests/training/test_learning.py"],
    "training/data.py": ["tests/training/test_data.py", "tests/training/test_audio_tokens.py",
                         "tests/training/test_paragraph_multi.py", "tests/training/test_device_resident.py"],
    "training/heads": ["tests/training/test_heads.py", "tests/training/test_formulas_avigate.py",
                       "tests/training/test_formulas_waver.py", "tests/training/test_waver.py"],
    "extractors/compress.py": ["tests/extractors/test_compress.py"],
    "extractors/annotations.py": ["tests/extractors/test_annotations.py"],
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
        # each mutant forks from a server that has only collected the tests: forking the
        # process that ran them would inherit its torch/Dask thread pools, and hang
        "process_isolation = forkserver\n")


def counts(work: Path, module: str) -> tuple[Counter, list[str]]:
    """Statuses of the module's mutants (from mutmut's .meta files) and the survivors."""
    c: Counter = Counter()
    survivors = []
    for meta in sorted((work / "mutants").rglob("*.py.meta")):
        rel = meta.relative_to(work / "mutants").as_posix().removesuffix(".meta")
        if not (rel == module or rel.startswith(module.rstrip("/") + "/")):
            continue
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status = STATUS.get(code, "suspicious" if code is not None else "not checked")
            c[status] += 1
            if status == "survived":
                survivors.append(name)
    return c, survivors


def score(c: Counter) -> float:
    tested = c["killed"] + c["survived"] + c["timeout"] + c["suspicious"]
    return 100.0 * (c["killed"] + c["timeout"]) / tested if tested else 0.0


def write_row(module: str, c: Counter, minutes: float) -> None:
    """Replace ``module``'s row of the table in docs/mutation.md (the other rows stay)."""
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(TABLE_START, 1)
    table, tail = rest.split(TABLE_END, 1)
    rows = {m: f"| `{m}` | not run yet | | | | | |" for m in MODULES}
    for line in table.strip().splitlines()[2:]:
        m = re.match(r"\| `([^`]+)` \|", line)
        if m and m[1] in rows:
            rows[m[1]] = line
    rows[module] = (f"| `{module}` | {sum(c.values())} | {c['killed']} | {c['survived']} | {c['timeout']} | "
                    f"{score(c):.1f} % | {minutes:.1f} min, {time.strftime('%Y-%m-%d')} |")
    lines = ["| module | mutants | killed | survived | timed out | score | run |",
             "|---|---:|---:|---:|---:|---:|---|", *rows.values()]
    DOC.write_text(head + TABLE_START + "\n" + "\n".join(lines) + "\n" + TABLE_END + tail, encoding="utf-8")


def run_module(module: str, max_children: int) -> None:
    work = ROOT / "mutants" / slug(module)
    prepare(module, work)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the copy's code must win
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")  # each mutant's tests are small; the cores are shared
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    t0 = time.time()
    print(f"== {module}: mutmut over {' '.join(MODULES[module])}", flush=True)
    with open(work / "mutmut.log", "w") as log:
        rc = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    minutes = (time.time() - t0) / 60
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
    print(f"{module}: {sum(c.values())} mutants, {c['killed']} killed, {c['survived']} survived, "
          f"{c['timeout']} timed out: {score(c):.1f} % in {minutes:.1f} min "
          f"(survivors: {work / 'survivors.txt'})", flush=True)


def recheck(module: str, pattern: str = "*") -> None:
    """The last run's survivors of ``module`` against today's tests, without a new run:
    each is applied to the copy's source (``mutmut apply``), the module's tests run there,
    and the copy restored. Prints the ones that still survive."""
    work = ROOT / "mutants" / slug(module)
    import fnmatch
    _, survivors = counts(work, module)
    survivors = [n for n in survivors if fnmatch.fnmatch(n, pattern)]
    if not survivors:
        sys.exit(f"{module}: no survivors recorded under {work} (run it first)")
    shutil.rmtree(work / "tests")
    shutil.copytree(ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    sources = [p for p in (work / module).rglob("*.py")] if (work / module).is_dir() else [work / module]
    still = []
    for name in survivors:
        saved = {p: p.read_bytes() for p in sources}
        try:
            subprocess.run([sys.executable, "-m", "mutmut", "apply", name], cwd=work, env=env, check=True,
                           capture_output=True)
            rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                                 *MODULES[module]], cwd=work, env=env, capture_output=True).returncode
        finally:
            for p, data in saved.items():
                p.write_bytes(data)
        print(f"{'killed  ' if rc else 'survives'} {name}", flush=True)
        if not rc:
            still.append(name)
    print(f"{module}: {len(survivors) - len(still)} of {len(survivors)} survivors now killed")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--recheck"]:  # --recheck MODULE [MUTANT-NAME-PATTERN]
        recheck(argv[1].rstrip("/"), *argv[2:3])
        return
    modules = [m.rstrip("/") for m in argv] or list(MODULES)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        sys.exit(f"unknown module(s) {', '.join(unknown)} (known: {', '.join(MODULES)})")
    children = int(os.environ.get("MUTATION_CHILDREN", "2"))
    for m in modules:
        run_module(m, children)


if __name__ == "__main__":
    main(sys.argv[1:])
