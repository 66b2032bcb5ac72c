#!/usr/bin/env bash
# One prepared GPU check (benchmarks/gpu_check.py has what it prints): about 2,000
# generated clips through `vtr extract` and a 10,000-video synthetic store through the
# trainer, offline, random-init encoders; within 8 minutes on one GPU with 16 cores.
#
#   bash benchmarks/gpu_check.sh                # on the GPU machine (the venv carried as .venv)
#   bash benchmarks/gpu_check.sh --size 0.5     # half the input
#   bash benchmarks/gpu_check.sh --cpu-smoke    # tiny sizes on the CPU (tests/test_gpu_check.py)
#
# The interpreter: $PYTHON, else .venv/bin/python, else python3 on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py="$(command -v python3)"
fi
if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
    echo "error: ffmpeg/ffprobe not found on the PATH (they make and probe the input clips)" >&2
    exit 1
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" benchmarks/gpu_check.py "$@"
