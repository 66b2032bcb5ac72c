"""The train split held on the device: loaded once, every batch gathered there.

``TrainConfig.resident`` chooses: ``auto`` holds the split on a CUDA device when it fits
half of the device's free memory (the rest is for the head, its activations and the
optimiser) and ``stream`` is left at auto, else the host loader
(``training.data.TrainLoader``) feeds the GPU;
``on`` holds it on any device, the CPU included (tests compare the two paths there);
``off`` always takes the host loader.

Floating features are held as float16, the store's own dtype: exact, and half the bytes
of the host loader's float32 (MSR-VTT's 9,000 training videos hold 16.8 GB of all 1,213
AST tokens, 0.4 GB when pooled to 32). A batch is cast back to float32 (audio stays
float16, as the host loader gives it), and the batches come in the host loader's order
from the same generator, so both paths train the same head.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from storage import open_store
from training.data import (FIELDS, HALF_FIELDS, SplitData, TrainLoader, available_ram, distinct_video_batches, field_dim,
                           load_arrays, split_nbytes)
from training.runs import ConfigError


def held_nbytes(store: str, data: SplitData, fields: tuple[str, ...], audio) -> int:
    """Bytes the split's ``fields`` take held on the device (floats as float16)."""
    ds = open_store(store)
    floats = tuple(f for f in fields if f == "tags" or (f in FIELDS and f not in HALF_FIELDS
                                                        and ds[FIELDS[f][0]].dtype.kind == "f"))
    rest = tuple(f for f in fields if f not in floats)
    # split_nbytes counts these floats as float32 (and the audio, in ``rest``, as float16)
    return split_nbytes(store, data, floats, audio) // 2 + split_nbytes(store, data, rest, audio)


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device`` (the available RAM for the CPU)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    return available_ram()


class ResidentSplit:
    """Epochs of (caption, video) pair batches gathered on the device (``index_select``
    on tensors held there): no host loader, no host-to-device copy per batch.

    Loaded in shards of ``shard_videos`` videos (all 1,213 AST tokens of 2,048 videos are
    3.8 GB of host memory in transit), each copied into its rows of the held tensors.
    """

    def __init__(self, store: str, data: SplitData, fields: tuple[str, ...], batch_size: int,
                 device: torch.device, audio=None, shard_videos: int = 2048):
        self.data, self.fields, self.batch_size, self.device = data, fields, batch_size, device
        self.tensors: dict[str, torch.Tensor] = {}
        sizes = {"video": data.n_videos, "caption": data.n_captions}
        for a in range(0, data.n_videos, shard_videos):
            rows = np.arange(a, min(a + shard_videos, data.n_videos))
            part = load_arrays(store, data, fields, audio, rows)
            # the split's rows of these videos' captions, in the order load_arrays returns them
            crows = np.flatnonzero(np.isin(data.caption_video, rows))
            for f in fields:
                x = part[f].astype(np.float16) if part[f].dtype.kind == "f" else part[f]
                dim = field_dim(f)
                if f not in self.tensors:
                    self.tensors[f] = torch.empty((sizes[dim], *x.shape[1:]), dtype=torch.from_numpy(x[:0]).dtype,
                                                  device=device)
                dst = torch.from_numpy(rows if dim == "video" else crows).to(device)
                self.tensors[f].index_copy_(0, dst, torch.from_numpy(x).to(device))
        self._caption_video = torch.from_numpy(data.caption_video).to(device)
        self.nbytes = sum(t.numel() * t.element_size() for t in self.tensors.values())

    def n_batches(self, seed: int, epoch: int) -> int:
        """How many batches ``epoch`` yields (``TrainLoader.n_batches``)."""
        return len(distinct_video_batches(self.data.caption_video, self.batch_size,
                                          np.random.default_rng([seed, epoch])))

    def _gather(self, f: str, idx: torch.Tensor) -> torch.Tensor:
        x = self.tensors[f].index_select(0, idx)
        return x.float() if x.is_floating_point() and f not in HALF_FIELDS else x

    def epoch(self, seed: int, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """Batches of one epoch: ``TrainLoader``'s (one in-memory shard, the same
        generator), so a resumed run sees the same batches as an uninterrupted one."""
        batches = distinct_video_batches(self.data.caption_video, self.batch_size,
                                         np.random.default_rng([seed, epoch]))
        if not batches:
            return
        order = torch.from_numpy(np.concatenate(batches)).to(self.device)  # one copy per epoch
        start = 0
        for b in batches:
            caps = order[start:start + b.size]
            start += b.size
            vids = self._caption_video.index_select(0, caps)
            yield {f: self._gather(f, caps if field_dim(f) == "caption" else vids) for f in self.fields}


def train_batches(store: str, data: SplitData, fields: tuple[str, ...], batch_size: int, device: torch.device,
                  audio=None, *, resident: str = "auto", stream: str = "auto", log=print
                  ) -> ResidentSplit | TrainLoader:
    """The train split's batches: held on ``device`` as ``resident`` says (module doc),
    else from the host loader (which streams as ``stream`` says)."""
    def host_loader() -> TrainLoader:
        loader = TrainLoader(store, data, fields, batch_size, device, audio, stream=stream)
        if loader.stream_audio:
            log("the audio tokens do not fit half the available RAM: read per batch")
        return loader

    # an explicit stream choice is one for the host loader
    if resident == "off" or (resident == "auto" and (device.type != "cuda" or stream != "auto")):
        return host_loader()
    need, budget = held_nbytes(store, data, fields, audio), free_bytes(device) // 2
    if need > budget:
        msg = (f"the train split takes {need / 2**30:.2f} GiB on {device}, over half its free memory "
               f"({budget / 2**30:.2f} GiB)")
        if resident == "on":
            raise ConfigError(f"resident=on: {msg} (use resident=auto or off)")
        log(f"note: {msg}: batches come from host memory")
        return host_loader()
    split = ResidentSplit(store, data, fields, batch_size, device, audio)
    log(f"train split held on {device}: {split.nbytes / 2**30:.2f} GiB")
    return split


__all__ = ["ResidentSplit", "free_bytes", "held_nbytes", "train_batches"]
