#!/usr/bin/env bash
# Creates .venv with the pinned dependencies and makes sure the system tools exist.
# Idempotent: `make` re-runs it only when pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null || need_apt+=(espeak-ng)   # speech for the fbank tests
# headless Chromium renders `vtr report` pages in the layout test (fatal there only in CI)
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    need_apt+=(chromium)
  else
    echo "setup: no chromium: the report layout test will be skipped (sudo apt-get install chromium)" >&2
  fi
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${need_apt[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: missing ${need_apt[*]}; install them (e.g. sudo apt-get install ${need_apt[*]}) and re-run" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
  echo "setup: need Python 3.11 or 3.12 (found $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setup: installing pinned dependencies into .venv (a few minutes the first time; log: .venv/setup.log)"
# compat mode puts the checkout on sys.path: a path-based import beats any folder named
# like our packages (Dask workers keep a "storage" spill folder in their working dir)
if ! .venv/bin/python -m pip install -e ".[dev]" --config-settings editable_mode=compat >.venv/setup.log 2>&1; then
  grep -v "^WARNING: Location" .venv/setup.log | tail -30 >&2
  echo "setup: pip install failed (full log: .venv/setup.log)" >&2
  exit 1
fi
# newer pips also report wheels whose platform tag they do not recognise (decord's);
# only real dependency conflicts stop the set-up
if ! out=$(.venv/bin/python -m pip check 2>&1); then
  conflicts=$(printf '%s\n' "$out" | grep -v "is not supported on this platform" || true)
  if [ -n "$conflicts" ]; then
    printf '%s\n' "$conflicts" >&2
    exit 1
  fi
fi
touch .venv/.vtr-installed
