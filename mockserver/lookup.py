"""Fetch what a path names, or answer 404: an id that is not the caller's does not exist."""

from __future__ import annotations

from .errors import NotFound
from .prepared import Stored
from .reads import RecentReads
from .store import Row, Tx, alive


def visible_tune(tx: Tx, tenant: str, tune_id: int) -> Row:
    return found_tune(tx.stored_tune(tenant, tune_id), tune_id).row()


def found_tune(tune: Stored | None, tune_id: int) -> Stored:
    if tune is None:
        raise NotFound(f"Tune {tune_id} not found")
    return tune


def remembered_tune(
    reads: RecentReads, tenant: str, tune_id: int, tx: Tx | None = None
) -> Stored | None:
    """``Tx.stored_tune()`` through ``reads``: remembered while no tune is written and the
    tune has not expired. In ``tx``, a write transaction: as it began, until it writes a
    tune (then as it sees it)."""

    def still(found: Stored) -> bool:
        return alive(found.fields(), tx.now if tx is not None else reads.store.now())

    key = ("tune", tenant, tune_id)
    return reads.read("tunes", key, lambda read: read.stored_tune(tenant, tune_id), still, tx)


def own_prompt(tx: Tx, tenant: str, prompt_id: int, tune_id: int | None = None) -> Row:
    return stored_prompt(tx, tenant, prompt_id, tune_id).row()


def stored_prompt(tx: Tx, tenant: str, prompt_id: int, tune_id: int | None = None) -> Stored:
    prompt = tx.stored_prompt(tenant, prompt_id, tune_id)
    if prompt is None:
        raise NotFound(f"Prompt {prompt_id} not found")
    return prompt


def remembered_prompt(
    reads: RecentReads, tenant: str, prompt_id: int, tune_id: int | None = None
) -> Stored:
    """``stored_prompt()`` through ``reads``: remembered while no prompt is written."""
    key = ("prompt", tenant, prompt_id, tune_id)
    return reads.read("prompts", key, lambda read: stored_prompt(read, tenant, prompt_id, tune_id))
