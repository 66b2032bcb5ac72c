"""Features from a store into batches: splits, audio tokens (all or pooled), no-duplicate
batching.

Reads only through ``storage`` (``open_store`` gives lazy dask-backed arrays). A split
is loaded into memory when it fits (``stream="auto"`` compares its size with half the
available RAM); otherwise training streams the audio per batch, and when the rest does
not fit either, each epoch walks chunk-aligned shards of videos in random order, loading
the next shard in a background thread while the current one trains. Evaluation splits
are always loaded (they are small). Floating features are held as float32 (twice the
store's float16) so that building a batch is a plain gather; audio stays float16.
"""
from __future__ import annotations

import os
import queue
import re
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from storage import DONE, StoreError, StoreLayout, layout_of, open_store, read_attrs
from storage.schema import MAX_CLIP_LAYERS

# batch key -> (store variable, item dimension). "audio" comes from an audio source
# (``StoreAudio`` or a pooled cache, as ``TrainConfig.audio_tokens`` says).
FIELDS: dict[str, tuple[str, str]] = {
    "text": ("caption_embedding", "caption"),
    "text_tokens": ("caption_tokens", "caption"),
    "text_mask": ("caption_mask", "caption"),
    "frames": ("frame_features", "video"),
    "frame_mask": ("frame_mask", "video"),
    "has_audio": ("has_audio", "video"),
}
# issue 26 (training.clip_finetune): the template-wrapped captions, and CLIP's hidden
# states entering block L - j (``--finetune-clip j`` reads ``*_hidden_j``)
FIELDS.update({"text_template": ("caption_template_embedding", "caption"),
               "text_template_tokens": ("caption_template_tokens", "caption"),
               "text_template_mask": ("caption_template_mask", "caption")})
for _j in range(1, MAX_CLIP_LAYERS + 1):
    FIELDS[f"frame_hidden_{_j}"] = (f"frame_hidden_{_j}", "video")
    FIELDS[f"caption_hidden_{_j}"] = (f"caption_hidden_{_j}", "caption")
# floating fields held and batched as float16 (the rest become float32): the audio tokens
# and the hidden states are the large ones, and the head or the CLIP tail casts them on the device
HALF_FIELDS = ("audio",) + tuple(f for f in FIELDS if "_hidden_" in f)
# batch keys built from the tags step (item dimension "video"): ``tags`` [n, K, D] =
# phrase_embedding[tag_index] (zero rows past the table) and ``tag_mask`` [n, K], True
# for real tags of videos whose tags step is done (the rest are masked, never guessed)
TAG_FIELDS = ("tags", "tag_mask")


def field_dim(f: str) -> str:
    """Item dimension ("video" or "caption") of batch key ``f``."""
    return "video" if f == "audio" or f in TAG_FIELDS else FIELDS[f][1]


def tag_arrays(store: str, video_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tags [n, K, D] float32, tag_mask [n, K]) of store videos ``video_idx``."""
    ds = open_store(store)
    if "phrase_embedding" not in ds.variables:
        # the tags step may have run and found the data too thin: say what it recorded
        why = read_attrs(store).get("step_warnings", {}).get("tags")
        raise StoreError(f"{store}: no phrase table, so no tags ("
                         + (f"the tags step recorded: {why})" if why else "run `vtr extract --steps tags` first)"))
    table = np.asarray(ds["phrase_embedding"].values, dtype=np.float32)
    index = np.asarray(ds["tag_index"].data[video_idx].compute()).astype(np.int64)
    done = ds["tags_state"].values[video_idx] == DONE
    mask = (index >= 0) & (index < table.shape[0]) & done[:, None]
    tags = table[np.where(mask, index, 0)] * mask[..., None]
    return tags.astype(np.float32), mask


class EmptySplitError(StoreError):
    """A split with no usable video or caption."""


def store_identity(path: str) -> dict:
    """What a run records about its store, so evaluating on another store fails clearly."""
    attrs = read_attrs(path)
    lay = layout_of(path)
    return {"path": os.path.abspath(path) if "://" not in str(path) else str(path),
            "dataset": attrs.get("dataset"), "created": attrs.get("created"),
            "n_videos": lay.n_videos, "n_captions": lay.n_captions, "n_val": attrs.get("n_val")}


# --- audio ------------------------------------------------------------------------------
AUDIO_TOKENS_DEFAULT = "all"


def audio_grid(layout: StoreLayout) -> bool:
    """Whether the store's tokens are ``audio_special_tokens`` followed by an
    ``audio_freq_patches`` x ``audio_time_patches`` grid (the AST's 2 + 12 x 101)."""
    return (layout.audio_special_tokens >= 1 and layout.n_audio_tokens ==
            layout.audio_special_tokens + layout.audio_freq_patches * layout.audio_time_patches)


@dataclass(frozen=True)
class AudioTokens:
    """What a head reads of each video's audio tokens (``TrainConfig.audio_tokens``).

    ``all``: every token, the special tokens merged into one (their mean), so the AST's
    1214 become AVIGATE's 1213; ``pool-time-N``: the merged special token plus N - 1 equal
    time windows of the patch grid, each averaged over frequency; ``pool-tokens-N``: N
    equal windows along the token axis, averaged (any layout; N or fewer tokens are kept).
    Stores whose tokens are not a special + grid layout get ``all`` as stored.
    """

    pooling: str  # all | pool-time | pool-tokens
    n: int = 0

    VALID = ("all (every token, special tokens merged) | pool-time-N (1 special + N-1 time windows "
             "averaged over frequency, N >= 2) | pool-tokens-N (N windows along the tokens, N >= 1)")

    @classmethod
    def parse(cls, name: str) -> "AudioTokens":
        if name == "all":
            return cls("all")
        m = re.fullmatch(r"(pool-time|pool-tokens)-(\d+)", str(name))
        if m and int(m[2]) >= (2 if m[1] == "pool-time" else 1):
            return cls(m[1], int(m[2]))
        raise ValueError(f"audio_tokens {name!r} is not one of: {cls.VALID}")

    def __str__(self) -> str:
        return self.pooling if self.pooling == "all" else f"{self.pooling}-{self.n}"

    def check(self, layout: StoreLayout) -> None:
        """Raise ValueError when this pooling cannot apply to the store's token layout."""
        if self.pooling != "pool-time":
            return
        if not audio_grid(layout):
            raise ValueError(
                f"audio_tokens {self}: the store's {layout.n_audio_tokens} audio tokens are not "
                f"{layout.audio_special_tokens} special + {layout.audio_freq_patches} x "
                f"{layout.audio_time_patches} patches (use all or pool-tokens-N)")
        if self.n - 1 > layout.audio_time_patches:
            raise ValueError(f"audio_tokens {self}: only {layout.audio_time_patches} time patches "
                             f"(pool-time-N takes N <= {layout.audio_time_patches + 1})")

    def apply(self, tokens: np.ndarray, layout: StoreLayout) -> np.ndarray:
        """[n, T, Da] store tokens -> [n, P, Da] float16 as this option feeds them."""
        n_special = layout.audio_special_tokens
        if self.pooling == "pool-tokens":
            if tokens.shape[1] <= self.n:
                return tokens.astype(np.float16, copy=False)
            x = torch.from_numpy(np.ascontiguousarray(tokens)).float().transpose(1, 2)
            return F.adaptive_avg_pool1d(x, self.n).transpose(1, 2).numpy().astype(np.float16)
        if not audio_grid(layout):
            return tokens.astype(np.float16, copy=False)
        special = tokens[:, :n_special].astype(np.float32).mean(1, keepdims=True)
        if self.pooling == "all":
            return np.concatenate([special.astype(np.float16), tokens[:, n_special:].astype(np.float16)], 1)
        n, _, d = tokens.shape
        grid = torch.from_numpy(np.ascontiguousarray(tokens[:, n_special:])).float()
        grid = grid.reshape(n, layout.audio_freq_patches, layout.audio_time_patches, d).mean(1)
        timed = F.adaptive_avg_pool1d(grid.transpose(1, 2), self.n - 1).transpose(1, 2).numpy()
        return np.concatenate([special, timed], 1).astype(np.float16)


class StoreAudio:
    """The store's audio tokens as ``AudioTokens("all")`` feeds them, read on indexing:
    ``audio[store_video_indices]`` -> [n, T, Da] float16 (zeros for videos whose audio
    step is not done). ``audio_tokens`` holds one video per chunk, so any set of videos
    reads whole chunks and nothing else; reading in store order keeps the reads sequential."""

    dtype = np.dtype(np.float16)

    def __init__(self, store: str):
        ds = open_store(store)
        self.layout = layout_of(store)
        self._tokens = ds["audio_tokens"].data
        self._done = ds["audio_state"].values == DONE
        probe = AudioTokens("all").apply(np.zeros((1, *self._tokens.shape[1:]), np.float16), self.layout)
        self.shape = (self._tokens.shape[0], *probe.shape[1:])

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        x = AudioTokens("all").apply(np.asarray(self._tokens[uniq].compute()), self.layout)
        x *= self._done[uniq, None, None]
        # a split's videos come sorted and unique: no second copy of all their tokens
        return x if uniq.size == idx.size and (uniq == idx).all() else x[inverse]


def pooled_audio(store: str, cache: str, pooling: AudioTokens, progress: bool = True) -> np.ndarray:
    """Every store video's audio pooled as ``pooling`` says, computed once into ``cache``
    (.npy, memory-mapped on later calls). Videos whose audio step is not done are zeros."""
    if os.path.exists(cache):
        return np.load(cache, mmap_mode="r")
    ds = open_store(store)
    layout = layout_of(store)
    pooling.check(layout)
    state = ds["audio_state"].values
    n_v = ds.sizes["video"]
    probe = pooling.apply(np.zeros((1, ds.sizes["audio_token"], ds.sizes["audio_dim"]), np.float16), layout)
    tmp = cache + ".partial.npy"
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n_v, *probe.shape[1:]))
    step = 64  # 64 x 1.8 MiB of raw AST tokens per read
    tokens = ds["audio_tokens"].data
    for a in tqdm(range(0, n_v, step), desc=f"audio {pooling}", unit="block", disable=not progress):
        b = min(a + step, n_v)
        done = state[a:b] == DONE
        if done.any():
            out[a:b] = pooling.apply(np.asarray(tokens[a:b].compute()), layout) * done[:, None, None]
    out.flush()
    del out
    os.replace(tmp, cache)  # only a complete cache ever carries the final name
    return np.load(cache, mmap_mode="r")


# --- splits -----------------------------------------------------------------------------
@dataclass
class SplitData:
    """One split's items (store indices) and, once loaded, its arrays.

    ``caption_video`` indexes the split's own video list, not the store.
    """

    name: str
    videos: np.ndarray
    captions: np.ndarray
    caption_video: np.ndarray
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_videos(self) -> int:
        return int(self.videos.size)

    @property
    def n_captions(self) -> int:
        return int(self.captions.size)

    def first_captions(self) -> np.ndarray:
        """Row of each video's first caption (lowest store index): the 1k-A style query."""
        first = np.full(self.n_videos, -1, dtype=np.int64)
        for row in range(self.n_captions - 1, -1, -1):
            first[self.caption_video[row]] = row
        return first


def select_split(store: str, split: str) -> SplitData:
    """Videos of ``split`` whose frames are done, and their captions whose text is done."""
    ds = open_store(store)
    splits = np.array([str(s) for s in ds["split"].values])
    names = sorted(set(splits.tolist()))
    if split not in ("train", "val", "test"):
        raise StoreError(f"{store}: unknown split {split!r} (train | val | test)")
    in_split = splits == split
    ok = in_split & (ds["frames_state"].values == DONE)
    videos = np.flatnonzero(ok)
    cv = ds["caption_video"].values.astype(np.int64)
    text_done = ds["text_state"].values == DONE
    cap_ok = text_done & ok[cv]
    captions = np.flatnonzero(cap_ok)
    if videos.size == 0 or captions.size == 0:
        raise EmptySplitError(
            f"{store}: split {split!r} is empty ({int(in_split.sum())} videos in it, "
            f"{videos.size} with frames done, {int((text_done & in_split[cv]).sum())} of its captions "
            f"with text done; "
            f"splits present: {', '.join(names)})")
    has_cap = np.zeros(ds.sizes["video"], bool)
    has_cap[cv[captions]] = True
    videos = videos[has_cap[videos]]  # a video without a caption cannot be ranked
    local = np.full(ds.sizes["video"], -1, dtype=np.int64)
    local[videos] = np.arange(videos.size)
    return SplitData(split, videos, captions, local[cv[captions]])


def split_nbytes(store: str, data: SplitData, fields: tuple[str, ...], audio: np.ndarray | None) -> int:
    """Bytes the split's ``fields`` take in memory (floats as float32, audio as float16)."""
    ds = open_store(store)
    total = 0
    for f in fields:
        if f == "audio":
            total += data.n_videos * int(np.prod(audio.shape[1:])) * 2
            continue
        if f in TAG_FIELDS:
            total += data.n_videos * ds.sizes["tag"] * (ds.sizes["dim"] * 4 if f == "tags" else 1)
            continue
        var, dim = FIELDS[f]
        itemsize = 4 if ds[var].dtype.kind == "f" and f not in HALF_FIELDS else ds[var].dtype.itemsize  # float32
        row = int(np.prod([ds.sizes[d] for d in ds[var].dims[1:]])) * itemsize
        total += row * (data.n_videos if dim == "video" else data.n_captions)
    return total


def available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def local_caption_video(data: SplitData, vrows: np.ndarray) -> np.ndarray:
    """The video (a row of ``vrows``) of each caption of the videos ``vrows``, in split order."""
    crows = np.flatnonzero(np.isin(data.caption_video, vrows))
    remap = np.full(data.n_videos, -1, dtype=np.int64)
    remap[vrows] = np.arange(vrows.size)
    return remap[data.caption_video[crows]]


def load_arrays(store: str, data: SplitData, fields: tuple[str, ...], audio: np.ndarray | None,
                videos: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Arrays for ``fields`` of the split's videos (or the subset ``videos``, local rows)
    and of their captions; also ``caption_video`` (local to the returned rows)."""
    ds = open_store(store)
    vrows = np.arange(data.n_videos) if videos is None else np.asarray(videos)
    crows = np.flatnonzero(np.isin(data.caption_video, vrows))
    out = {"caption_video": local_caption_video(data, vrows)}
    ds_state = ds["audio_state"].values if "has_audio" in fields else None
    if any(f in TAG_FIELDS for f in fields):
        out["tags"], out["tag_mask"] = tag_arrays(store, data.videos[vrows])
    for f in fields:
        if f == "audio":
            out[f] = np.asarray(audio[data.videos[vrows]])
        elif f in TAG_FIELDS:
            pass  # both made above
        else:
            var, dim = FIELDS[f]
            idx = data.videos[vrows] if dim == "video" else data.captions[crows]
            out[f] = np.asarray(ds[var].data[idx].compute())
            if f == "has_audio":  # only audio that was extracted counts
                out[f] = out[f] & (ds_state[idx] == DONE)
        if out[f].dtype.kind == "f" and f not in HALF_FIELDS:  # audio stays float16: see to_batch
            # float32 once here, so building a batch is a plain gather: the cheap heads
            # take ~10 ms a step on a CPU, and a cast per batch would show
            out[f] = out[f].astype(np.float32)
    return out


# --- batches ----------------------------------------------------------------------------
def distinct_video_batches(caption_video: np.ndarray, batch_size: int,
                           rng: np.random.Generator) -> list[np.ndarray]:
    """A random order of all captions cut into batches that never hold two captions of one
    video (they would be false negatives). A caption whose video is already in the
    current batch waits for a later batch. Batches of fewer than two are dropped."""
    order = rng.permutation(caption_video.size)
    batches: list[np.ndarray] = []
    cur: list[int] = []
    seen: set[int] = set()
    waiting: deque[int] = deque()

    def flush():
        nonlocal cur, seen
        if len(cur) >= 2:
            batches.append(np.asarray(cur, dtype=np.int64))
        cur, seen = [], set()
        for _ in range(len(waiting)):  # one pass over the waiting captions
            c = waiting.popleft()
            v = int(caption_video[c])
            if v in seen or len(cur) >= batch_size:
                waiting.append(c)
            else:
                cur.append(c)
                seen.add(v)

    for c in order:
        v = int(caption_video[c])
        if v in seen:
            waiting.append(int(c))
            continue
        cur.append(int(c))
        seen.add(v)
        if len(cur) == batch_size:
            flush()
    while cur or waiting:  # every flush starts a batch from the waiting captions
        flush()
    return batches


def to_batch(arrays: dict[str, np.ndarray], caption_rows: np.ndarray | None, video_rows: np.ndarray | None,
             fields: tuple[str, ...], device: torch.device) -> dict[str, torch.Tensor]:
    """Tensors for the given caption rows (text fields) and video rows (video fields);
    floating features become float32, except ``audio``: it stays float16 (half the bytes
    to hold, gather and copy; all 1213 AST tokens of a batch of 128 are 240 MB) and the
    head casts it on the device. Pinned memory and non-blocking copies on CUDA."""
    out = {}
    for f in fields:
        dim = field_dim(f)
        rows = video_rows if dim == "video" else caption_rows
        if rows is None:
            continue
        # numpy, not torch: its gather and cast run in this thread alone (releasing the
        # GIL), while a torch op here would start its own OpenMP team that competes with
        # the training thread for the cores
        x = np.take(arrays[f], np.asarray(rows, dtype=np.int64), axis=0)
        if x.dtype.kind == "f" and x.dtype != np.float32 and f not in HALF_FIELDS:
            x = x.astype(np.float32)
        out[f] = to_device(x, device)
    return out


def to_device(x: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(x)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t


class TrainLoader:
    """Epochs of (caption, video) pair batches for one split, in memory or streamed.

    With ``stream="auto"`` the audio is the first to leave memory when the split does not
    fit half the available RAM: it is by far the largest field (all AST tokens of
    MSR-VTT's 9k training videos are 16.8 GB), and read per batch from its source (one
    video per store chunk: whole-chunk reads in store order, in the background thread)
    it keeps the batches exactly those of the in-memory loader. The other fields are
    streamed in shards (``stream="dask"``) only when they alone do not fit either.
    """

    def __init__(self, store: str, data: SplitData, fields: tuple[str, ...], batch_size: int,
                 device: torch.device, audio: np.ndarray | None = None, stream: str = "auto",
                 shard_videos: int = 2048, prefetch: int = 4):
        self.store, self.data, self.fields, self.batch_size = store, data, fields, batch_size
        self.device, self.audio, self.prefetch = device, audio, prefetch
        if stream not in ("auto", "memory", "dask"):
            raise ValueError(f"stream must be auto, memory or dask, not {stream!r}")
        budget = available_ram() // 2
        rest = tuple(f for f in fields if f != "audio")
        rest_bytes = split_nbytes(store, data, rest, None)
        audio_bytes = split_nbytes(store, data, ("audio",), audio) if "audio" in fields and audio is not None else 0
        self.stream_audio = audio_bytes > 0 and (
            stream == "dask" or (stream == "auto" and rest_bytes + audio_bytes > budget))
        if stream == "auto":
            stream = "dask" if rest_bytes > budget else "memory"
        self.stream = stream
        self._held = rest if self.stream_audio else fields
        # shards of consecutive videos (store order, so reads follow the chunks)
        n = data.n_videos
        self.shards = ([np.arange(n)] if stream == "memory" else
                       [np.arange(a, min(a + shard_videos, n)) for a in range(0, n, shard_videos)])
        self._memory = load_arrays(store, data, self._held, audio) if stream == "memory" else None

    def n_batches(self, seed: int, epoch: int) -> int:
        """How many batches ``epoch`` yields: its shards' batches replayed on their captions
        alone (a caption that waits for a batch without its video can make more batches
        than ``n_captions // batch_size``)."""
        rng = np.random.default_rng([seed, epoch])
        return sum(len(distinct_video_batches(local_caption_video(self.data, self.shards[s]), self.batch_size, rng))
                   for s in rng.permutation(len(self.shards)))

    def _shard(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return self._memory if self._memory is not None else load_arrays(
            self.store, self.data, self._held, self.audio, rows)

    def _produce(self, epoch_seed: list[int], q: queue.Queue, stop: threading.Event) -> None:
        try:
            rng = np.random.default_rng(epoch_seed)
            for s in rng.permutation(len(self.shards)):
                rows = self.shards[s]
                arrays = self._shard(rows)
                for caps in distinct_video_batches(arrays["caption_video"], self.batch_size, rng):
                    if stop.is_set():
                        return
                    videos = arrays["caption_video"][caps]
                    batch = to_batch(arrays, caps, videos, self._held, self.device)
                    if self.stream_audio:
                        batch["audio"] = to_device(np.asarray(self.audio[self.data.videos[rows[videos]]]),
                                                   self.device)
                    q.put(batch)
            q.put(None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer thread
            q.put(e)

    def epoch(self, seed: int, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of one epoch; the order depends only on (seed, epoch), so a resumed
        run sees the same batches as an uninterrupted one."""
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        t = threading.Thread(target=self._produce, args=([seed, epoch], q, stop), daemon=True)
        t.start()
        try:
            while (item := q.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while t.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    t.join(0.05)
