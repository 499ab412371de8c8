"""Finding due work: what is due, and at any number of waiting prompts an index range."""

from __future__ import annotations

import re

import pytest
from conftest import GALLERY_TUNE, prompt_values
from sqlalchemy import event

NOW = 1_000.0


@pytest.fixture
def waiting(store):
    """Prompts on a trained tune: (id, ready_after, claimed_until, trained_at)."""
    rows = [
        (1, 200.0, None, None),
        (2, 50.0, 1_300.0, None),  # held: due when its claim ends
        (3, 150.0, 120.0, None),  # a claim that ended before it was due
        (4, 100.0, None, None),
        (5, 10.0, None, "2026-01-01T00:00:00.000Z"),  # finished
        (6, None, None, None),  # --prompt-polls: never due by time
    ]
    with store.begin() as tx:
        tx.update_tune(GALLERY_TUNE["id"], trained_at="2026-01-01T00:00:00.000Z")
        for prompt_id, ready_after, claimed_until, trained_at in rows:
            tx.insert_prompt(
                {**prompt_values(prompt_id), "ready_after": ready_after,
                 "claimed_until": claimed_until, "trained_at": trained_at}
            )  # fmt: skip
    return store


def test_the_next_due_prompt_counts_claims(waiting):
    with waiting.read() as tx:
        assert tx.next_due() == 100.0
    with waiting.begin() as tx:
        tx.delete_prompt("t", 4)
        tx.delete_prompt("t", 1)
    with waiting.read() as tx:
        assert tx.next_due() == 150.0
    with waiting.begin() as tx:
        tx.delete_prompt("t", 3)
    with waiting.read() as tx:
        assert tx.next_due() == 1_300.0


def test_claims_take_the_earliest_due_first(waiting):
    with waiting.begin() as tx:
        assert [row["id"] for row in tx.claim_due_prompts(NOW, 10.0, 2)] == [3, 4]
        assert [row["id"] for row in tx.claim_due_prompts(NOW, 10.0, 5)] == [1]


def _plans(store, work) -> list[str]:
    """EXPLAIN QUERY PLAN of each statement ``work(tx)`` runs."""
    statements = []

    def capture(_connection, _cursor, statement, parameters, *_):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", capture)
    try:
        with store.begin() as tx:
            work(tx)
            plans = [
                row[3]
                for statement, parameters in statements
                for row in tx.driver.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)
            ]
    finally:
        event.remove(store.engine, "before_cursor_execute", capture)
    return plans


@pytest.mark.parametrize(
    "work",
    [lambda tx: tx.next_due(), lambda tx: tx.claim_due_prompts(NOW, 10.0, 64)],
    ids=["next_due", "claim_due_prompts"],
)
def test_looking_for_due_prompts_reads_index_ranges(waiting, work):
    plans = _plans(waiting, work)
    prompt_reads = [plan for plan in plans if re.search(r"\bprompts\b", plan)]
    assert prompt_reads, plans
    # Each read of prompts is a range of the pending or the claimed prompts' index (or,
    # for the rows claimed, their ids): never a scan of every prompt.
    for plan in prompt_reads:
        assert plan.startswith("SEARCH"), plans
        assert re.search(r"prompts_pending|prompts_claimed|PRIMARY KEY", plan), plans
