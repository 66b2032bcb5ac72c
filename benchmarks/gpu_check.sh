#!/usr/bin/env bash
# One prepared GPU check (benchmarks/gpu_check.py has what it prints): about 2,000
# generated clips through the frames and audio steps and a 10,000-video synthetic store
# through the trainer, offline, random-init encoders; within 8 minutes on one GPU with 16
# cores. It needs no Prefect and no ffmpeg binary: the lent machine's image has neither.
#
#   bash benchmarks/gpu_check.sh --prepare      # here (a registry is reachable): the wheels the
#                                               # image lacks into .whl/, and the device command
#   bash benchmarks/gpu_check.sh                # on the GPU machine, after that command's install
#   bash benchmarks/gpu_check.sh --size 0.25    # a quarter of the input (under 3 minutes)
#   bash benchmarks/gpu_check.sh --cpu-smoke    # tiny sizes on the CPU (tests/test_gpu_check.py)
#
# The interpreter: $PYTHON, else .venv/bin/python, else python3 on the PATH.
# --prepare reads benchmarks/gpu_wheels.txt; VTR_WHEEL_DIR (default .whl) and
# VTR_WHEEL_PYTHON (default 3.12, the image's) are for scripts/rehearse_gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then
    py=.venv/bin/python
else
    py="$(command -v python3)"
fi

# Carried wheels must fit the 64 MiB a device call sends, with the work tree beside them.
MAX_WHEEL_MIB=60

prepare() {
    local dest="${VTR_WHEEL_DIR:-.whl}" pyver="${VTR_WHEEL_PYTHON:-3.12}"
    local -a pins
    mapfile -t pins < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' benchmarks/gpu_wheels.txt | grep .)
    rm -rf "$dest" && mkdir -p "$dest"  # one version of each: an old wheel would stop the install
    "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64 \
        -d "$dest" "${pins[@]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    local n bytes
    n=$(find "$dest" -maxdepth 1 -type f -name '*.whl' | wc -l)
    if [[ "$n" -ne "${#pins[@]}" ]]; then
        echo "error: $dest holds $n wheels for the ${#pins[@]} pins of benchmarks/gpu_wheels.txt" >&2
        exit 1
    fi
    bytes=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
    printf '%d wheels in %s: %.1f MiB (limit %d MiB)\n' "$n" "$dest" "$(echo "$bytes / 1048576" | bc -l)" "$MAX_WHEEL_MIB"
    if (( bytes >= MAX_WHEEL_MIB * 1048576 )); then
        echo "error: the wheels in $dest are over $MAX_WHEEL_MIB MiB" >&2
        exit 1
    fi
    cat <<EOF
device command (one call; carry [".whl"]; timeout_s 600; add --size 0.25 for the quick try):
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit; set -o pipefail; PYTHON=python3 PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh 2>&1 | tee \$OUT/gpu_check.log
EOF
}

if [[ "${1:-}" == "--prepare" ]]; then
    prepare
    exit 0
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" benchmarks/gpu_check.py "$@"
