"""Every shell command in README.md and docs/*.md is one the suite runs or checks.

The commands are read from the ```bash blocks (continuation lines joined, comments
dropped). A `vtr` line must parse against the real CLI (subcommand, options, their types;
`...` stands for elided arguments), and its subcommand and every option it uses must be
passed by some test. A `python -m MODULE` or script line must name a module or file that
exists and whose source defines each option used. Other programs (prefect, dask, docker,
jupyter, make) are listed below with the tests that run them: a command of a program not
listed, or a subcommand those tests never use, fails here. So a new command in the docs
needs a test, and a command whose flag is renamed fails before a reader finds out.
"""
from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest
import typer

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# what the tests run (this file aside: its examples of bad commands cover nothing)
TESTS_TEXT = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("*.py")
                       if p.resolve() != Path(__file__).resolve())

# programs that are not ours -> the files that run them (a documented subcommand must appear there)
EXTERNAL = {
    "prefect": ["tests/flows/test_work_pool.py", "tests/flows/test_dask_cluster.py", "tests/conftest.py"],
    "dask": ["tests/flows/test_dask_cluster.py"],  # as python -m distributed.cli.dask_{scheduler,worker}
    "docker": ["tests/flows/test_docker.py"],  # no Docker here: the files are checked against the project
    "jupyter": ["tests/vtr/test_notebook.py"],
    "make": ["tests/vtr/test_demo.py", ".ci/run"],
}
SHELL_BUILTINS = {"export", "cd"}
SEPARATORS = {"&&", "||", ";", "|", "&"}


def doc_commands() -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every command in the docs' shell blocks."""
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in re.finditer(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.S | re.M):
            start = text[:block.start()].count("\n") + 2
            variables: dict[str, str] = {}
            pending = ""
            for i, line in enumerate(block.group(1).replace("\\\n", " ").split("\n")):
                for name, value in variables.items():
                    line = line.replace(f"${name}", value)
                try:
                    tokens = shlex.split(pending + line, comments=True)
                except ValueError:  # a quoted argument that goes on over the next line
                    pending += line + "\n"
                    continue
                pending = ""
                if len(tokens) == 1 and re.fullmatch(r"[A-Z_]+=.*", tokens[0]):
                    name, _, value = tokens[0].partition("=")
                    variables[name] = value
                    continue
                cmd: list[str] = []
                for tok in [*tokens, ";"]:
                    if tok in SEPARATORS:
                        while cmd and re.fullmatch(r"[A-Z_]+=.*", cmd[0]):  # VAR=value cmd
                            cmd.pop(0)
                        if cmd:
                            out.append((f"{doc.name}:{start + i}", cmd))
                        cmd = []
                    else:
                        cmd.append(tok)
    return out


def _program(argv0: str) -> str:
    return Path(argv0).name if argv0.startswith((".venv/", "/")) else argv0


def _parse_vtr(args: list[str]) -> list[str]:
    """The subcommand path of ``vtr ARGS``, parsed by the real CLI (raises on a bad line)."""
    from typer._click.exceptions import MissingParameter

    from vtr.cli import app
    elided = "..." in args
    args = [a for a in args if a != "..."]
    cmd = typer.main.get_command(app)
    ctx = cmd.make_context("vtr", list(args))
    path = []
    while getattr(cmd, "commands", None):
        name, sub, rest = cmd.resolve_command(ctx, ctx._protected_args + ctx.args)
        path.append(name)
        try:
            ctx = sub.make_context(name, rest, parent=ctx)
        except MissingParameter:
            if not elided:
                raise
        cmd = sub
    return path


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def _check_source(where: str, source: str, args: list[str]) -> list[str]:
    return [f"{where}: {flag} is not in the script's source" for flag in _flags(args)
            if f'"{flag}"' not in source and f"'{flag}'" not in source and f"{flag} " not in source]


def check(where: str, argv: list[str]) -> list[str]:
    """What is wrong with one documented command ([] when the suite covers it)."""
    prog, args = _program(argv[0]), argv[1:]
    if prog in SHELL_BUILTINS:
        return []
    if prog == "vtr":
        try:
            path = _parse_vtr(args)
        except Exception as e:  # noqa: BLE001 - the parser's own message says what is wrong
            return [f"{where}: `vtr {' '.join(args)}` does not parse: {type(e).__name__}: {e}"]
        problems = [f"{where}: no test runs `vtr {' '.join(path)}`" for _ in [0]
                    if not re.search(rf"[\"']{re.escape(path[-1])}[\"' ]", TESTS_TEXT)]
        flags = [f.removeprefix("--no-") if f.startswith("--no-") else f for f in _flags(args)]
        # a flag counts as passed when a test gives it, or its field (flags generated from a
        # config are read by one helper, tests/vtr/test_config_flags.py)
        problems += [f"{where}: no test passes {flag} (`vtr {' '.join(path)}`)" for flag in flags
                     if not re.search(rf"[\"']--(no-)?{re.escape(flag[2:])}[\"'= ]", TESTS_TEXT)
                     and not re.search(rf"\b{flag[2:].replace('-', '_')}=|[\"']{flag[2:].replace('-', '_')}[\"']",
                                       TESTS_TEXT)]
        return problems
    if prog in ("python", "python3"):
        if args[:1] == ["-m"]:
            spec = importlib.util.find_spec(args[1])
            if spec is None or spec.origin is None:
                return [f"{where}: no module {args[1]}"]
            missing = [] if args[1] in TESTS_TEXT or args[1].startswith("benchmarks") else \
                [f"{where}: no test runs python -m {args[1]}"]
            return missing + _check_source(where, Path(spec.origin).read_text(encoding="utf-8"), args[2:])
        prog, args = args[0], args[1:]
    if prog in ("bash", "sh"):
        prog, args = args[0], args[1:]
    if prog.endswith((".py", ".sh")):
        script = ROOT / prog
        if not script.is_file():
            return [f"{where}: no file {prog}"]
        covered = prog.startswith("benchmarks/") or prog in TESTS_TEXT or script.name in TESTS_TEXT
        return ([] if covered else [f"{where}: no test runs {prog}"]) + \
            _check_source(where, script.read_text(encoding="utf-8"), args)
    if prog in EXTERNAL:
        sub = next((a for a in args if not a.startswith("-")), "")
        texts = [(ROOT / f).read_text(encoding="utf-8") for f in EXTERNAL[prog]]
        return [] if any(sub in t for t in texts) else \
            [f"{where}: `{prog} {sub}` is run by none of {', '.join(EXTERNAL[prog])}"]
    return [f"{where}: `{prog}` is a program no test runs (add a test, or list it in EXTERNAL with the tests)"]


def test_docs_have_commands():
    commands = doc_commands()
    assert len(commands) > 20
    assert any(_program(argv[0]) == "vtr" and argv[1] == "extract" for _, argv in commands)


def test_every_documented_command_is_run_or_checked_by_the_suite():
    problems = [p for where, argv in doc_commands() for p in check(where, argv)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("line, why", [
    ("vtr extract --store s.zarr --frame-batch-sise 8", "does not parse"),
    ("vtr train --store s.zarr --head avigate --out r --epochs five", "does not parse"),
    ("vtr store frobnicate s.zarr", "does not parse"),
    ("rsync -a demo/ elsewhere/", "a program no test runs"),
    ("python benchmarks/decode.py --no-such-flag 3", "is not in the script's source"),
    ("prefect cloud login", "is run by none of"),
])
def test_a_bad_or_untested_command_fails(line, why):
    problems = check("doc.md:1", shlex.split(line))
    assert problems and why in problems[0], problems
