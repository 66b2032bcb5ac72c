"""Retrieval datasets by name: ``get_dataset("vatex").read(root)`` gives the manifest,
``.write_sample(out)`` a small copy in the real layout; ``DATASETS`` lists them all."""
from extractors.datasets.registry import (DATASETS, AudioSource, DatasetSpec, Protocol, get_dataset,
                                          list_datasets, read_dataset, register_dataset)
# Importing a module registers its dataset.
from extractors.datasets import (activitynet, charades, didemo, lsmdc, msrvtt, msvd,  # noqa: E402,F401  isort: skip
                                 vatex)

__all__ = ["DATASETS", "AudioSource", "DatasetSpec", "Protocol", "get_dataset", "list_datasets", "read_dataset",
           "register_dataset"]
