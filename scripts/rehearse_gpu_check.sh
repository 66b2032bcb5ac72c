#!/usr/bin/env bash
# Rehearse the GPU check here, as it will run on the lent GPU machine (not a test: it needs
# the package registry). It
#   1. runs `gpu_check.sh --prepare` (the cp312 wheels into .whl/, their size, the device command);
#   2. makes a venv that holds only the image's packages the check touches (benchmarks/gpu_wheels.txt
#      lists the image): at the image's versions where those are known and this Python has them;
#   3. installs the same pins' wheels for this Python with the device command's
#      `pip install --no-index --no-deps --target`, and puts that folder on PYTHONPATH;
#   4. runs `gpu_check.sh --cpu-smoke` there with no ffmpeg/ffprobe on the PATH and no Prefect
#      installed: it must pass (the check itself asserts that Prefect was never imported).
# What differs from the machine, because this one cannot have it: Python is this machine's
# (3.11; the image's is 3.12, and step 3 fetches cp311 builds of the same pins); torch,
# torchvision and torchaudio are the project venv's (2.14.1 / 0.29.1 / 2.11.0, linked in:
# the image's torch 2.11.0 is a CUDA build of several GB with its NVIDIA libraries); numpy
# is 2.4.6 (the image's 2.5.2 is for Python >= 3.12 only); importlib_metadata is added, which
# the carried dask needs on Python < 3.12 only.
#
#   bash scripts/rehearse_gpu_check.sh            # REHEARSAL_DIR (default /tmp/vtr-gpu-rehearsal)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
dir=${REHEARSAL_DIR:-/tmp/vtr-gpu-rehearsal}
project_py=${PROJECT_PYTHON:-.venv/bin/python}  # where torch is linked from
base_py=${BASE_PYTHON:-python3}
t0=$SECONDS
df -h "$(dirname "$dir")" | tail -1 | awk '{print "disk: " $4 " free at " $6}'

echo "== 1. prepare (the device's wheels)"
PYTHON="$project_py" bash benchmarks/gpu_check.sh --prepare

echo "== 2. a venv holding only the image's packages"
venv=$dir/venv
if [[ ! -f $venv/.image-ready ]]; then
    rm -rf "$venv"
    "$base_py" -m venv "$venv"
    site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # torch and its own CUDA libraries: linked from the project venv, dist-info included, so
    # pip sees them installed and pulls no other torch
    "$project_py" - "$site" <<'EOF'
import os, sys
from importlib import metadata
site = sys.argv[1]
names = ("torch", "torchvision", "torchaudio", "triton")
dists = [d for d in metadata.distributions()
         if d.metadata["Name"].lower() in names or d.metadata["Name"].lower().startswith(("nvidia-", "cuda-"))]
tops = set()
for d in dists:
    root = str(d.locate_file(""))
    for f in d.files or []:
        top = f.parts[0]
        if top not in ("..", "bin", "__pycache__") and not top.endswith(".pth"):
            tops.add((root, top))
for root, top in sorted(tops):
    dst = os.path.join(site, top)
    if not os.path.lexists(dst):
        os.symlink(os.path.join(root, top), dst)
print(f"linked {len(dists)} distributions (torch family) from {root}")
EOF
    # the rest of the image's packages the check touches (benchmarks/gpu_wheels.txt's image list);
    # typer: transformers needs it, and the image's needs no pydantic (0.29 does; 0.27 does not)
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        numpy==2.4.6 transformers==5.17.0 huggingface_hub==1.33.0 tokenizers==0.23.2 safetensors==0.8.0 typer==0.27.0 \
        timm regex tqdm xarray pandas h5py fsspec opencv-python-headless pillow filelock psutil \
        pyyaml packaging sympy networkx jinja2 scipy cloudpickle toolz click tensorboard matplotlib \
        "importlib_metadata; python_version < '3.12'" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
    touch "$venv/.image-ready"
fi
# nothing the image lacks may have come in with those: the carried wheels must be the only source
carried=$(sed -e 's/#.*//' -e 's/==.*//' -e 's/[[:space:]]//g' benchmarks/gpu_wheels.txt | grep . | grep -v typing-extensions)
installed=$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | sed 's/==.*//' | tr 'A-Z_' 'a-z-')
for name in $carried prefect av ffmpeg-python; do
    if grep -qx "$(echo "$name" | tr 'A-Z_' 'a-z-')" <<<"$installed"; then
        echo "error: the image venv holds $name, which the image lacks" >&2
        exit 1
    fi
done
if "$venv/bin/python" -c "import prefect" 2>/dev/null; then
    echo "error: prefect imports in the image venv" >&2
    exit 1
fi
echo "image venv: $("$venv/bin/python" --version), $("$venv/bin/python" -m pip list 2>/dev/null | tail -n +3 | wc -l) distributions; no prefect, av, decord, zarr, pydantic, open_clip"

echo "== 3. the same pins for this Python, installed as on the device"
pyver=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
VTR_WHEEL_DIR=$dir/whl VTR_WHEEL_PYTHON=$pyver PYTHON="$project_py" bash benchmarks/gpu_check.sh --prepare | sed -n 1p
rm -rf "$dir/site"
"$venv/bin/python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$dir/site" "$dir"/whl/*.whl

echo "== 4. gpu_check.sh --cpu-smoke: no ffmpeg, no Prefect"
bin=$dir/bin  # every program of the PATH but ffmpeg and ffprobe
rm -rf "$bin" && mkdir -p "$bin"
IFS=: read -ra path_dirs <<<"$PATH"
for d in "${path_dirs[@]}"; do
    [[ -d $d && $d != "$repo"* ]] || continue
    for f in "$d"/*; do
        n=$(basename "$f")
        case $n in ffmpeg | ffprobe | prefect) continue ;; esac
        [[ -x $f && ! -e $bin/$n ]] && ln -s "$f" "$bin/$n"
    done
done
export PATH="$venv/bin:$bin"
if command -v ffmpeg >/dev/null || command -v ffprobe >/dev/null; then
    echo "error: ffmpeg is still on the PATH" >&2
    exit 1
fi
echo "PATH has no ffmpeg/ffprobe; PYTHONPATH=$dir/site"
PYTHONPATH="$dir/site" PYTHON="$venv/bin/python" PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh --cpu-smoke
echo "rehearsal passed in $((SECONDS - t0)) s"
