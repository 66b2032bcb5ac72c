"""Provenance records: how a feature group was made, written into the store's attributes."""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import platform
from importlib import metadata

RANDOM_INIT = "RANDOM-INIT"

# Packages whose versions decide the numbers in a feature group.
TRACKED_PACKAGES = ("torch", "open_clip_torch", "transformers", "numpy", "zarr", "decord", "av",
                    "librosa", "torchaudio", "vtr")


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def provenance_record(model: str, weights: str | os.PathLike | None, weights_sha256: str | None,
                      preprocessing: dict, **extra) -> dict:
    """One group's record. ``weights=None`` means random initialisation, which is flagged
    in capitals so nobody mistakes such features for real ones."""
    return {
        "model": model,
        "weights": str(weights) if weights else RANDOM_INIT,
        "weights_sha256": weights_sha256 if weights else RANDOM_INIT,
        "preprocessing": preprocessing,
        "packages": package_versions(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def is_random_init(record: dict) -> bool:
    return record.get("weights_sha256") == RANDOM_INIT
