"""The same store code on a real PostgreSQL: the API's flows, ids and idempotency shared by
replicas, and claims that skip rows another replica holds.

Each test gets a fresh database (the ``postgres_url`` fixture); without a server on
127.0.0.1:5432 they are skipped with the reason.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import MakeApi, jpeg
from sqlalchemy import text

from mockserver.gallery import GALLERY_TUNES
from mockserver.settings import Settings
from mockserver.store import Store, Tx, database_url


def test_the_faceid_flow_on_postgresql(make_api: MakeApi, postgres_url: str):
    api = make_api(db=postgres_url)
    tune = api.faceid_tune("Jane", image=jpeg((10, 200, 30)))
    assert tune["trained_at"] is not None
    created = api.post(
        "/tunes/690204/prompts", json={"prompt": {"text": f"<faceid:{tune['id']}:1> woman"}}
    )
    assert created.status_code == 201
    done = api.complete(created.json()["id"])
    assert len(done["images"]) == 1
    image = api.client.get(done["images"][0])
    assert image.headers["content-type"] == "image/jpeg"
    refused = api.post("/tunes/690204/prompts", json={"prompt": {"text": "<faceid:999:1> x"}})
    assert refused.status_code == 422
    assert api.get(f"/tunes/{2**63 - 1}").status_code == 404
    assert api.as_key("sd_someone_else").get(f"/tunes/{tune['id']}").status_code == 404
    assert api.delete(f"/tunes/{tune['id']}").status_code == 200
    assert api.get(f"/tunes/{tune['id']}").status_code == 404


def test_paging_on_postgresql(make_api: MakeApi, postgres_url: str):
    api = make_api(db=postgres_url)
    ids = [
        api.post("/tunes/690204/prompts", json={"prompt": {"text": f"p{i}"}}).json()["id"]
        for i in range(5)
    ]
    first = api.get("/prompts", params={"limit": 2}).json()
    assert [p["id"] for p in first] == ids[::-1][:2]
    after = api.get("/prompts", params={"limit": 2, "before_id": first[-1]["id"]}).json()
    assert [p["id"] for p in after] == ids[::-1][2:4]
    assert api.get("/prompts", params={"offset": 10001}).status_code == 400


def test_two_replicas_share_state_and_never_repeat_an_id(make_api: MakeApi, postgres_url: str):
    one, two = make_api(db=postgres_url), make_api(db=postgres_url)
    tune = one.faceid_tune("Shared")
    assert two.get(f"/tunes/{tune['id']}").json()["title"] == "Shared"

    def create(index: int) -> int:
        replica = (one, two)[index % 2]
        response = replica.post("/tunes/690204/prompts", json={"prompt": {"text": f"n{index}"}})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(create, range(60)))
    assert len(set(ids)) == 60
    assert sorted(ids) == list(range(1, 61))


def test_idempotency_holds_across_replicas(make_api: MakeApi, postgres_url: str):
    replicas = [make_api(db=postgres_url, idempotency=True) for _ in range(2)]
    barrier = threading.Barrier(6)

    def create(index: int) -> int:
        barrier.wait()
        response = replicas[index % 2].post(
            "/tunes/690204/prompts", json={"prompt": {"text": "same", "seed": 7}}
        )
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    with ThreadPoolExecutor(6) as pool:
        ids = set(pool.map(create, range(6)))
    assert len(ids) == 1
    assert len(replicas[0].get("/prompts").json()) == 1


def test_a_claimed_row_is_skipped_by_other_replicas_not_waited_for(postgres_url: str):
    """While one replica's claim is still open (its rows locked), another replica claims
    the next rows at once instead of blocking on the lock (FOR UPDATE SKIP LOCKED)."""
    settings = Settings(db=postgres_url)
    stores = [Store(settings.database_url, lambda: "2026-11-28T00:00:00.000Z") for _ in range(2)]
    now = time.time()
    with stores[0].begin() as tx:
        tx.ensure_tune(dict(GALLERY_TUNES[0]))
        for prompt_id in (1, 2, 3, 4):
            tx.insert_prompt(
                {
                    "id": prompt_id,
                    "tenant": "t",
                    "tune_id": 690204,
                    "attrs": {},
                    "created_at": "x",
                    "updated_at": "x",
                    "ready_after": now - 1,
                }
            )
    first = stores[0].engine.connect()
    try:
        transaction = first.begin()
        held = Tx(first, lambda: "now").claim_due_prompts(now, 60, limit=2)
        assert [row["id"] for row in held] == [1, 2]
        with stores[1].begin() as tx:
            # Waiting on the first claim's locks would fail here instead of hanging.
            tx.connection.execute(text("SET LOCAL lock_timeout = '2s'"))
            taken = tx.claim_due_prompts(now, 60, limit=10)
        assert [row["id"] for row in taken] == [3, 4]
        transaction.commit()
    finally:
        first.close()
    with stores[1].begin() as tx:
        assert tx.claim_due_prompts(now, 60, limit=10) == []  # all four are held
        assert tx.claim_due_prompts(now + 61, 60, limit=10) != []  # the leases ran out
    for store in stores:
        store.close()


def test_replicas_starting_together_migrate_once(postgres_url: str):
    settings = Settings(db=postgres_url)
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: Store(settings.database_url, lambda: "x"), range(4)))
    with stores[0].engine.connect() as connection:
        versions = connection.execute(text("SELECT version FROM schema_version")).all()
    assert len(versions) == 1
    for store in stores:
        store.close()


@pytest.mark.parametrize("url", ["postgres://u@h/db", "postgresql://u:p@h:5/db"])
def test_plain_postgresql_urls_use_psycopg(url: str):
    assert database_url(url).startswith("postgresql+psycopg://")
