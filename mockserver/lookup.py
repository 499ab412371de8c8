"""Fetch what a path names, or answer 404: an id that is not the caller's does not exist."""

from __future__ import annotations

from .errors import NotFound
from .prepared import Stored
from .store import Row, Tx


def visible_tune(tx: Tx, tenant: str, tune_id: int) -> Row:
    return stored_tune(tx, tenant, tune_id).row()


def stored_tune(tx: Tx, tenant: str, tune_id: int) -> Stored:
    tune = tx.stored_tune(tenant, tune_id)
    if tune is None:
        raise NotFound(f"Tune {tune_id} not found")
    return tune


def own_prompt(tx: Tx, tenant: str, prompt_id: int, tune_id: int | None = None) -> Row:
    return stored_prompt(tx, tenant, prompt_id, tune_id).row()


def stored_prompt(tx: Tx, tenant: str, prompt_id: int, tune_id: int | None = None) -> Stored:
    prompt = tx.stored_prompt(tenant, prompt_id, tune_id)
    if prompt is None:
        raise NotFound(f"Prompt {prompt_id} not found")
    return prompt
