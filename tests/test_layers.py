"""The package layers are a contract (pyproject.toml, [tool.importlinter]): the suite runs
import-linter on the tree, and on a scratch copy with one layer broken to show it would fail."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("vtr", "flows", "training", "extractors", "storage")
LINT = str(Path(sys.executable).with_name("lint-imports"))


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(cwd)
    return subprocess.run([LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_layers_kept():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "0 broken" in r.stdout


def test_a_broken_layer_fails(tmp_path):
    for p in PACKAGES:
        shutil.copytree(ROOT / p, tmp_path / p, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    # training reaching into flows breaks "training beside extractors, below flows"
    with open(tmp_path / "training" / "__init__.py", "a") as f:
        f.write("\nimport flows  # noqa: E402,F401\n")
    r = _lint(tmp_path)
    assert r.returncode != 0
    assert "BROKEN" in r.stdout and "training" in r.stdout and "flows" in r.stdout


def test_lint_imports_sees_every_cli_arrow():
    """vtr/cli.py imports each command module by name (no importlib), so the graph that
    import-linter checks holds an arrow from the CLI to every file in vtr/commands/."""
    import grimp

    env_path = list(sys.path)
    sys.path.insert(0, str(ROOT))
    try:
        graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    finally:
        sys.path[:] = env_path
    commands = sorted(p.stem for p in (ROOT / "vtr" / "commands").glob("*.py") if p.stem != "__init__")
    missing = [c for c in commands if not graph.direct_import_exists(importer="vtr.cli", imported=f"vtr.commands.{c}")]
    assert not missing, f"vtr.cli reaches these command modules by no import arrow: {missing}"
    # and through them the layers below: the CLI's arrows run into training and flows
    assert graph.chain_exists(importer="vtr.cli", imported="training.runs")
    assert graph.chain_exists(importer="vtr.cli", imported="flows.config")
