"""MSR-VTT: the reader and sample writer that predate the registry, registered as they are."""
from extractors.annotations import read_msrvtt
from extractors.datasets.registry import register_dataset
from extractors.sample_data import make_sample_dataset

register_dataset("msrvtt", title="MSR-VTT", write_sample=make_sample_dataset, protocol="single", audio="url",
                 evaluated="MSRVTT_JSFUSION_test.csv (1k-A)")(read_msrvtt)
