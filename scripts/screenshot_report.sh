#!/usr/bin/env bash
# Render `vtr report RUN` and screenshot it with headless Chromium (Debian: apt-get install chromium).
# Usage: scripts/screenshot_report.sh RUN [OUT.png]
set -euo pipefail
run=${1:?usage: scripts/screenshot_report.sh RUN [OUT.png]}
out=${2:-$run/report.png}
cd "$(dirname "$0")/.."
.venv/bin/vtr report "$run"
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "screenshot_report: no chromium on PATH (sudo apt-get install chromium)" >&2
  exit 1
fi
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1200,1800 \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$run")/report.html" 2>/dev/null
echo "wrote $out"
