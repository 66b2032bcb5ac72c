"""The dataset registry: one spec per dataset, naming its reader, its sample writer and the
facts the rest of vtr needs about it (sizes, evaluated split, protocol, audio source)."""
from __future__ import annotations

import dataclasses
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from extractors.annotations import AnnotationError, Manifest

# single: one caption per test video, square matrix (MSR-VTT 1k-A style).
# multi: several captions per test video, CLIP4Clip's multi-sentence protocol (MSVD, VATEX).
# paragraph: one paragraph per video, scored like single (DiDeMo, ActivityNet).
Protocol = Literal["single", "multi", "paragraph"]
# own: the file's own track only. url: crawl the annotation's URL and window (MSR-VTT).
# youtube: crawl the URL the reader builds from the YouTube id, over the id's window when it
# has one (MSVD, VATEX) or the whole video (ActivityNet).
AudioSource = Literal["own", "url", "youtube"]

Reader = Callable[..., Manifest]
SampleWriter = Callable[..., Path]


@dataclass(frozen=True)
class DatasetSpec:
    """Readers always store the evaluated split as ``"test"`` and hold validation videos
    out of the training videos when the release has no validation split of its own;
    ``evaluated`` names the release's file or split that ``"test"`` comes from."""

    name: str
    title: str
    read: Reader
    write_sample: SampleWriter
    protocol: Protocol
    audio: AudioSource
    evaluated: str
    n_frames: int = 12
    n_words: int = 32
    # Frames come from the first ``max_seconds`` only (DiDeMo: 31 s, as annotation stopped
    # at 30 s); None: the whole file.
    max_seconds: float | None = None

    @property
    def options(self) -> tuple[str, ...]:
        """The reader's keyword options (``n_val``, ``video_dir``, ``youtube_url`` ...)."""
        return tuple(p.name for p in inspect.signature(self.read).parameters.values()
                     if p.kind is inspect.Parameter.KEYWORD_ONLY)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, *, title: str, write_sample: SampleWriter, protocol: Protocol,
                     audio: AudioSource, evaluated: str, **sizes: float) -> Callable[[Reader], Reader]:
    """Reader decorator; ``sizes`` overrides ``n_frames``, ``n_words``, ``max_seconds``."""
    def deco(read: Reader) -> Reader:
        if name in DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        DATASETS[name] = DatasetSpec(name=name, title=title, read=read, write_sample=write_sample,
                                     protocol=protocol, audio=audio, evaluated=evaluated, **sizes)
        return read
    return deco


def get_dataset(name: str) -> DatasetSpec:
    """An unknown name is a user error (one line listing the known names)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise AnnotationError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})") from None


def list_datasets() -> list[str]:
    return sorted(DATASETS)


def read_dataset(name: str, root: str | os.PathLike, **options) -> Manifest:
    """``get_dataset(name).read(root, **options)``, the manifest carrying the spec's
    protocol, sizes and frame window; an option the reader lacks is a user error naming the
    ones it has (callers holding options for several datasets filter them with
    ``spec.options``)."""
    spec = get_dataset(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise AnnotationError(f"dataset {name!r} has no option {unknown[0]!r} "
                              f"(options: {', '.join(spec.options) or 'none'})")
    return dataclasses.replace(spec.read(root, **options), protocol=spec.protocol, n_frames=spec.n_frames,
                               n_words=spec.n_words, max_seconds=spec.max_seconds)
