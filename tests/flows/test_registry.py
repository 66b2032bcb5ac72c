"""The step registry: one entry per step, in run order, its facts consistent with the store
schema, and its dependency graph usable to find what a change makes stale."""
import pytest

from flows.config import ALL_STEPS
from flows.registry import REGISTRY, downstream, encoders_needed, plan
from storage.schema import ALL_VARIABLES, STEPS


def test_every_step_once_in_run_order_after_what_it_reads():
    assert tuple(REGISTRY) == ALL_STEPS
    seen = set()
    for spec in REGISTRY.values():
        assert set(spec.after) <= seen, spec.name  # a step's inputs are written before it
        seen.add(spec.name)


def test_what_each_step_writes_is_the_schema_s():
    for name, dim in STEPS.items():
        writes = REGISTRY[name].writes
        assert f"{name}_state" in writes and set(writes) <= set(ALL_VARIABLES), name
        assert all(ALL_VARIABLES[v].step == name for v in writes), name
    assert REGISTRY["frames"].writes[:2] == ("frame_features", "frame_mask")
    assert "phrase_embedding" in REGISTRY["tags"].writes and REGISTRY["validate"].writes == ()


def test_downstream_and_plan():
    assert downstream(["frames"]) == ["tags", "validate"]
    # a changed source file (probe's fingerprint) redoes its copy, frames and audio
    assert downstream(["compress"]) == ["frames", "tags", "validate"]  # frames decode its copies
    assert downstream(["crawl"]) == ["audio", "validate"]
    assert downstream(["probe"]) == ["crawl", "compress", "frames", "audio", "tags", "validate"]
    assert downstream(["text"]) == ["style", "validate"]
    assert [s.name for s in plan(["validate", "text", "probe"])] == ["probe", "text", "validate"]
    assert encoders_needed(["probe", "crawl"]) == set() and encoders_needed(["audio", "tags"]) == {"ast", "clip"}


@pytest.mark.parametrize("step", ["probe", "crawl", "compress", "frames", "audio", "text"])
def test_block_steps_and_store_steps(step):
    assert REGISTRY[step].scope == "block"
    assert {s for s in REGISTRY if REGISTRY[s].scope == "store"} == {"tags", "style", "validate"}
    assert REGISTRY["crawl"].retries == 2 and all(REGISTRY[s].retries == 0 for s in REGISTRY if s != "crawl")
