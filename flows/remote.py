"""Stores and data roots at fsspec URLs (``s3://bucket/msrvtt``): checked before anything
else runs, annotations read from a local copy, videos copied block by block into a local
scratch folder of bounded size, so that the extractors only ever read local files.

Both the store and the data root use ``ExtractConfig.storage_options`` (one set of fsspec
options: a store and a data root on two endpoints that need different credentials are not
supported).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from extractors.annotations import AnnotationError, Manifest
from flows.errors import ExtractError

# Listed, not copied, when the annotations are mirrored: readers that look videos up by file
# name (MSVD, Charades ...) find them, and only the annotation files are downloaded.
MEDIA_EXTENSIONS = frozenset({".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp",
                              ".ts", ".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac"})
# Filesystems whose first path part is a bucket (container) that must exist.
_BUCKETED = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}


def is_url(path: str) -> bool:
    return "://" in str(path)


def _filesystem(url: str, storage_options: dict | None):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError, TypeError) as e:
        raise ExtractError(f"{url}: cannot open this URL ({type(e).__name__}: {e})".splitlines()[0]) from None


def _protocols(fs) -> set[str]:
    p = fs.protocol
    return {p} if isinstance(p, str) else set(p)


def remote_failure(url: str, e: BaseException, bucket: str | None = None) -> str:
    """One line for a failed request to ``url``: a missing bucket, refused credentials, or
    whatever else the filesystem said."""
    cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if isinstance(e, PermissionError):
        return f"{url}: access refused ({cause}): check the credentials in --storage-options"
    if isinstance(e, FileNotFoundError) and bucket:
        return f"{url}: bucket {bucket!r} does not exist"
    return f"{url}: cannot reach it ({type(e).__name__}: {cause})"


def check_url(url: str, storage_options: dict | None) -> None:
    """A bucketed URL's bucket exists and the credentials are accepted (one request), else
    an ``ExtractError`` in one line; other URLs fail on their first real request."""
    fs, key = _filesystem(url, storage_options)
    if not _protocols(fs) & _BUCKETED:
        return
    bucket = key.split("/")[0]
    try:
        fs.info(bucket)
    except Exception as e:  # noqa: BLE001 - botocore and friends raise their own types
        raise ExtractError(remote_failure(url, e, bucket)) from None


def read_annotations(data_root: str, storage_options: dict | None, read: Callable[[str], Manifest]) -> Manifest:
    """``read(data_root)``; for a URL, ``read`` gets a local copy of the root's annotation
    files (its videos as empty stand-ins), and the manifest and errors name the URL."""
    if not is_url(data_root):
        return read(data_root)
    url = data_root.rstrip("/")
    check_url(url, storage_options)
    fs, key = _filesystem(url, storage_options)
    try:
        files = fs.find(key)
    except Exception as e:  # noqa: BLE001
        raise ExtractError(remote_failure(url, e)) from None
    if not files:
        raise AnnotationError(f"{url}: data root does not exist (no file under it)")
    with tempfile.TemporaryDirectory(prefix="vtr-annotations-") as local:
        top = key.rstrip("/") + "/"
        wanted = []
        for name in files:
            parts = name[len(top):].split("/")
            # a key naming ".." would land outside the copy; a folder marker holds nothing
            if not name.startswith(top) or any(p in ("", ".", "..") for p in parts):
                continue
            rel = "/".join(parts)
            dst = os.path.join(local, *parts)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if os.path.splitext(rel)[1].lower() in MEDIA_EXTENSIONS:
                open(dst, "wb").close()
            else:
                wanted.append((name, dst))
        try:
            if wanted:
                fs.get([n for n, _ in wanted], [d for _, d in wanted])
        except Exception as e:  # noqa: BLE001
            raise ExtractError(remote_failure(url, e)) from None
        try:
            manifest = read(local)
        except AnnotationError as e:
            raise AnnotationError(str(e).replace(local, url)) from None
    manifest.root = url
    manifest.warnings = [w.replace(local, url) for w in manifest.warnings]
    return manifest


@dataclass(frozen=True)
class Scratch:
    """Where a block's videos from a URL are copied, and how many bytes it may hold at once."""

    folder: str | None  # None: the system's temporary folder
    limit_bytes: int
    storage_options: dict | None

    def sizes(self, urls: list[str]) -> dict[str, int | None]:
        """Each URL's size in bytes; None for one that does not exist."""
        out: dict[str, int | None] = {}
        for u in urls:
            fs, key = _filesystem(u, self.storage_options)
            try:
                out[u] = int(fs.info(key)["size"])
            except FileNotFoundError:
                out[u] = None
        return out

    @contextlib.contextmanager
    def copies(self, urls: list[str]) -> Iterator[dict[str, str]]:
        """``{url: local copy}`` of ``urls``, removed on leaving (also on failure)."""
        if self.folder:
            os.makedirs(self.folder, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="vtr-block-", dir=self.folder)
        try:
            local = {u: os.path.join(folder, f"{k}-{os.path.basename(u)}") for k, u in enumerate(urls)}
            by_fs: dict[int, tuple] = {}
            for u in urls:
                fs, key = _filesystem(u, self.storage_options)
                by_fs.setdefault(id(fs), (fs, [], []))
                by_fs[id(fs)][1].append(key)
                by_fs[id(fs)][2].append(local[u])
            for fs, keys, dsts in by_fs.values():
                fs.get(keys, dsts)
            yield local
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def plan_groups(sources: list[str | None], sizes: dict[str, int | None], limit: int,
                too_big: Callable[[str, int], str]) -> tuple[list[list[int]], dict[int, str]]:
    """Consecutive groups of item positions whose URL files fit in ``limit`` bytes together,
    and the positions that cannot run (a missing file; one larger than the limit) with why.
    Items that read no URL join whichever group is open."""
    groups: list[list[int]] = [[]]
    errors: dict[int, str] = {}
    used = 0
    for j, src in enumerate(sources):
        size = sizes.get(src, 0) if src and is_url(src) else 0
        if size is None:
            errors[j] = f"{src}: no such file"
            continue
        if size > limit:
            errors[j] = too_big(src, size)
            continue
        if used + size > limit and groups[-1]:
            groups.append([])
            used = 0
        groups[-1].append(j)
        used += size
    return [g for g in groups if g], errors
