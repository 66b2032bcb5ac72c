"""Reading frame_features of a 10,000-video store: zarr and HDF5 against NumPy.

    .venv/bin/python benchmarks/store_read.py [--videos 10000] [--batches 50]

Prints ratios (time / baseline time) measured in this run; the aim is a full read within
3x of `np.load` of the same bytes. The crc32c checksum every store array carries is
priced against a copy of the array without it (same chunks, same reader). Random mini-batches of 128 videos are compared with
fancy indexing into an in-RAM array.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import h5py
import numpy as np
import zarr

from storage import load_variable, open_store
from storage.store import consolidate
from storage.synthetic import create_synthetic_store


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=50)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="vtr-bench-")
    path = os.path.join(tmp, "bench.zarr")
    create_synthetic_store(path, args.videos, 1, n_audio_tokens=1, audio_dim=1)
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((args.videos, 12, 512), dtype=np.float32).astype(np.float16)
    g = zarr.open_group(path, mode="r+")
    g["frame_features"][:] = feats
    arr = g["frame_features"]
    # the same array without the checksum codec: what the crc32c verification costs
    plain = g.create_array("frame_features_nocrc", shape=arr.shape, chunks=arr.chunks, dtype=arr.dtype,
                           compressors=None, dimension_names=("video", "frame", "dim"))
    plain[:] = feats
    consolidate(path)
    npy = os.path.join(tmp, "f.npy")
    np.save(npy, feats)
    h5 = os.path.join(tmp, "f.h5")
    with h5py.File(h5, "w") as f:
        f.create_dataset("frame_features", data=feats, chunks=arr.chunks)
    nbytes = feats.nbytes
    print(f"frame_features: {args.videos} videos, {nbytes / 2**20:.0f} MiB float16, chunks {arr.chunks}")

    # warm the page cache for every file once, so all readers start equal
    np.load(npy); arr[:]; plain[:]
    with h5py.File(h5) as f:
        f["frame_features"][:]
    t_np = best_of(lambda: np.load(npy))
    t_vtr = best_of(lambda: load_variable(path, "frame_features"))
    t_zarr = best_of(lambda: arr[:])
    t_vtr_plain = best_of(lambda: load_variable(path, "frame_features_nocrc"))
    t_zarr_plain = best_of(lambda: plain[:])
    t_xr = best_of(lambda: open_store(path).frame_features.values)

    def h5_full():
        with h5py.File(h5) as f:
            f["frame_features"][:]
    t_h5 = best_of(h5_full)

    batches = [np.sort(rng.choice(args.videos, 128, replace=False)) for _ in range(args.batches)]
    t_ram = best_of(lambda: [feats[b] for b in batches])
    t_zb = best_of(lambda: [arr.get_orthogonal_selection((b,)) for b in batches], repeat=1)

    def h5_batches():
        with h5py.File(h5) as f:
            d = f["frame_features"]
            [d[b] for b in batches]
    t_hb = best_of(h5_batches, repeat=1)

    print(f"\nfull read ({nbytes / 2**20:.0f} MiB), best of 3        seconds   GB/s   ratio vs np.load")
    for name, t in (("np.load (.npy, baseline)", t_np), ("storage.load_variable", t_vtr),
                    ("zarr generic arr[:]", t_zarr),
                    ("xarray open_store().values", t_xr), ("HDF5, same chunks", t_h5)):
        print(f"  {name:<38}{t:8.3f}{nbytes / t / 1e9:7.2f}{t / t_np:8.2f}x")
    print(f"\n{args.batches} random batches of 128 videos          seconds   ratio vs in-RAM")
    for name, t in (("numpy fancy index in RAM (baseline)", t_ram), ("zarr orthogonal selection", t_zb),
                    ("HDF5 fancy index, same chunks", t_hb)):
        print(f"  {name:<38}{t:8.3f}{t / t_ram:8.1f}x")
    print("\ncrc32c checksum cost, full read              with   without   ratio")
    for name, t, t0 in (("storage.load_variable", t_vtr, t_vtr_plain), ("zarr generic arr[:]", t_zarr, t_zarr_plain)):
        print(f"  {name:<38}{t:8.3f}{t0:8.3f}{t / t0:8.2f}x")
    print(f"\nfull read within 3x of np.load: {'yes' if t_vtr / t_np <= 3 else 'NO'} "
          f"(storage.load_variable {t_vtr / t_np:.2f}x)")
    print("(random batches from a store touch whole 256-video chunks; the trainer reads the "
          "store once into memory and batches from RAM)")


if __name__ == "__main__":
    main()
