"""The Prefect tasks over the steps of ``flows.steps``: one task per owned store block,
one per whole-store step, and the final store check. The steps themselves import no
Prefect (the GPU check runs them on a machine without it)."""
from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger, task

from flows.config import EncoderSpec, ExtractConfig
from flows.steps import ENCODER_WRITERS, MEDIA_WRITERS, WHOLE_STORE_WRITERS, clip_encoder, worker_address
from storage import check_store, layout_of


def _encoders(store: str, cfg: ExtractConfig) -> EncoderSpec:
    """The encoders for ``store``: CLIP's text context is the store's words per caption."""
    return cfg.encoders(n_words=layout_of(store, cfg.storage_options).n_words)


def _log_error(step: str) -> Callable[[int, str], None]:
    log = get_run_logger()
    return lambda i, e: log.warning("%s item %d: %s", step, i, e)


def _block_task(step: str, **task_options):
    def run(store: str, idx: list[int], first: int, cfg: ExtractConfig) -> dict:
        kw = {"indices": idx, "on_error": _log_error(step)}
        if step in MEDIA_WRITERS:
            res = MEDIA_WRITERS[step](store, cfg, **kw)
        else:
            fn, encoder = ENCODER_WRITERS[step]
            res = fn(store, encoder(_encoders(store, cfg)), cfg, **kw)
        return {**res, "worker": worker_address()}

    run.__name__ = run.__qualname__ = f"{step}_block"
    return task(name=step, task_run_name=f"{step} block {{first}}", **task_options)(run)


def _store_task(step: str):
    def run(store: str, cfg: ExtractConfig) -> dict:
        return WHOLE_STORE_WRITERS[step](store, clip_encoder(_encoders(store, cfg)), cfg, on_error=_log_error(step))

    run.__name__ = run.__qualname__ = f"{step}_step"
    return task(name=step)(run)


# One task per owned block of items; the crawl's network may fail for a moment: retried.
BLOCK_TASKS = {s: _block_task(s, **({"retries": 2, "retry_delay_seconds": 5} if s == "crawl" else {}))
               for s in (*MEDIA_WRITERS, *ENCODER_WRITERS)}
# Mining needs every training caption and the style rows are few: one task over the store.
STORE_TASKS = {s: _store_task(s) for s in WHOLE_STORE_WRITERS}


@task(name="validate")
def validate_store(store: str, cfg: ExtractConfig) -> list[str]:
    problems = check_store(store, cfg.storage_options)
    log = get_run_logger()
    for p in problems:
        log.error("store check: %s", p)
    return problems
