"""List pages as a client walks them: every visible object once, newest first, with
``before_id`` and ``offset``, however a tenant's own tunes and the gallery's interleave; on
SQLite and PostgreSQL. And the SQLite plans that keep a page's cost the same at any store
size: index ranges read backwards, no sort of a range (a sort would grow with the store).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import OTHER_KEY, Api, MakeApi
from sqlalchemy import create_engine, update

from mockserver.gallery import GALLERY_IDS, GALLERY_TUNES
from mockserver.prepared import Prepared
from mockserver.store import PROMPTS, SHARED_TENANT, TUNES, Store, database_url
from mockserver.tables import tunes

PAST, FUTURE = "2000-01-01T00:00:00.000Z", "2999-01-01T00:00:00.000Z"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mock.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def edit_tunes(url: str, ids: list[int], **values: Any) -> None:
    """Change stored tunes behind the API's back (what no request can do: move one into
    the gallery, let one expire)."""
    engine = create_engine(database_url(url))
    with engine.begin() as connection:
        connection.execute(update(tunes).where(tunes.c.id.in_(ids)).values(**values))
    engine.dispose()


def ids_of(api: Api, path: str, **params: int) -> list[int]:
    response = api.get(path, params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()]


def walk_by_before_id(api: Api, path: str, limit: int) -> list[int]:
    seen: list[int] = []
    while page := ids_of(api, path, limit=limit, **({"before_id": seen[-1]} if seen else {})):
        assert len(page) <= limit
        seen += page
    return seen


def walk_by_offset(api: Api, path: str, limit: int) -> list[int]:
    seen: list[int] = []
    while page := ids_of(api, path, limit=limit, offset=len(seen)):
        seen += page
    return seen


def assert_pages(api: Api, path: str, expected: list[int], limit: int) -> None:
    """Both ways of paging give ``expected``; so does ``before_id`` with an ``offset``."""
    assert walk_by_before_id(api, path, limit) == expected
    assert walk_by_offset(api, path, limit) == expected
    middle = expected[len(expected) // 2]
    older = [i for i in expected if i < middle]
    assert ids_of(api, path, before_id=middle, offset=2, limit=limit) == older[2 : 2 + limit]


def test_tune_pages_interleave_own_and_gallery_tunes(make_api: MakeApi, db: str):
    api = make_api(db=db)
    them = api.as_key(OTHER_KEY)
    ids = [api.faceid_tune(f"t{i}")["id"] for i in range(18)]
    theirs = them.faceid_tune("theirs")["id"]
    gallery = ids[1::4]
    edit_tunes(db, gallery, tenant=SHARED_TENANT)  # now every tenant's, between ours
    edit_tunes(db, ids[0::4], expires_at=FUTURE)
    edit_tunes(db, ids[2::4], expires_at=PAST)  # expired: gone from every list
    edit_tunes(db, ids[3::4], expires_at=PAST, auto_extend=True)  # kept

    visible = sorted({*ids, *GALLERY_IDS} - set(ids[2::4]), reverse=True)
    assert visible[:2] == sorted(GALLERY_IDS, reverse=True)
    assert_pages(api, "/tunes", visible, limit=4)
    assert_pages(api, "/tunes", visible, limit=1)
    shared = sorted({theirs, *gallery, *GALLERY_IDS}, reverse=True)
    assert walk_by_before_id(them, "/tunes", limit=2) == shared


def post_prompt(api: Api, tune_id: int, text: str) -> int:
    response = api.post(f"/tunes/{tune_id}/prompts", json={"prompt": {"text": text}})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def test_prompt_pages_of_a_tenant_and_of_one_tune(make_api: MakeApi, db: str):
    api = make_api(db=db)
    them = api.as_key(OTHER_KEY)
    ours: dict[int, list[int]] = {tune_id: [] for tune_id in sorted(GALLERY_IDS)}
    for index in range(14):
        tune_id = sorted(GALLERY_IDS)[index % 3 == 0]
        ours[tune_id].append(post_prompt(api, tune_id, f"p{index}"))
        post_prompt(them, tune_id, f"theirs {index}")

    everything = sorted((i for created in ours.values() for i in created), reverse=True)
    assert_pages(api, "/prompts", everything, limit=4)
    for tune_id, created in ours.items():
        assert_pages(api, f"/tunes/{tune_id}/prompts", created[::-1], limit=3)


def test_the_gallery_tenant_lists_each_gallery_tune_once(db: str):
    """Tenants are key digests, never the gallery's ``''``; were one so, no tune doubles."""
    store = Store(db, lambda: "2026-11-01T00:00:00.000Z")
    with store.begin() as tx:
        for tune in GALLERY_TUNES:
            tx.ensure_tune(dict(tune))
        listed = [row["id"] for row in tx.list_tunes(SHARED_TENANT, 120, None, 0)]
    store.close()
    assert listed == sorted(GALLERY_IDS, reverse=True)


# -- the SQLite plans ----------------------------------------------------------------------
PARAMS = {"tenant": "t", "now": PAST, "before_id": 100, "tune_id": 1, "limit": 20, "offset": 0}
TABLE_READ = re.compile(r"^(SEARCH|SCAN)( TABLE)? (tunes|prompts)\b")


@pytest.fixture(scope="module")
def sqlite_store() -> Iterator[Store]:
    store = Store("sqlite://", lambda: PAST)
    yield store
    store.close()


def sqlite_plan(store: Store, statement: Prepared) -> list[tuple[int, int, str]]:
    """EXPLAIN QUERY PLAN of a statement as the mock runs it: (node, parent, detail)."""
    with store.begin() as tx:
        compiled = statement.statement.compile(dialect=tx.connection.dialect)
        assert compiled.positiontup is not None
        values = {**compiled.params, **PARAMS, "window": 20}
        args = tuple(values[name] for name in compiled.positiontup)
        rows = tx.connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled.string}", args)
        return [(int(row[0]), int(row[1]), str(row[3])) for row in rows]


def table_reads(plan: list[tuple[int, int, str]]) -> list[str]:
    return [detail for _, _, detail in plan if TABLE_READ.match(detail)]


def sorted_table_reads(plan: list[tuple[int, int, str]]) -> list[str]:
    """Table reads whose rows a temp B-tree sorts (a sort is a sibling of what it orders)."""
    sorting = {parent for _, parent, detail in plan if "TEMP B-TREE" in detail}
    return [d for _, parent, d in plan if parent in sorting and TABLE_READ.match(d)]


@pytest.mark.parametrize("before", [False, True])
def test_sqlite_reads_a_tune_page_as_two_unsorted_index_ranges(sqlite_store: Store, before: bool):
    plan = sqlite_plan(sqlite_store, TUNES[before])
    reads = table_reads(plan)
    assert len(reads) == 2, plan  # the tenant's range and the gallery's
    bound = r"\(tenant=\? AND id<\?\)" if before else r"\(tenant=\?\)"
    assert all(re.search(rf"USING INDEX tunes_tenant_id {bound}$", r) for r in reads), plan
    # Each range comes in id order and stops after limit + offset rows; only those few
    # rows are merged (SQLite sorts each arm's short output), never a range of the table.
    assert sorted_table_reads(plan) == [], plan


@pytest.mark.parametrize(
    ("tune", "before", "index", "bound"),
    [
        (False, False, "prompts_tenant_id", r"\(tenant=\?\)"),
        (False, True, "prompts_tenant_id", r"\(tenant=\? AND id<\?\)"),
        (True, False, "prompts_tenant_tune_id_id", r"\(tenant=\? AND tune_id=\?\)"),
        (True, True, "prompts_tenant_tune_id_id", r"\(tenant=\? AND tune_id=\? AND id<\?\)"),
    ],
)
def test_sqlite_reads_a_prompt_page_as_one_index_range(
    sqlite_store: Store, tune: bool, before: bool, index: str, bound: str
):
    plan = sqlite_plan(sqlite_store, PROMPTS[(tune, before)])
    assert len(plan) == 1, plan
    assert re.search(rf"^SEARCH( TABLE)? prompts USING INDEX {index} {bound}$", plan[0][2]), plan
