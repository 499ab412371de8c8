"""Group commit: the prompt creates of one round of the event loop share one commit. Each
is answered only once committed; one that fails fails alone; a commit that fails fails
every create it held; anything else the loop does with the store commits the group first."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import httpx
import pytest
from conftest import DEFAULTS, KEY, prompt_values

from contracts.servers import LiveServer

AUTH = {"Authorization": f"Bearer {KEY}"}


def _committed(database, prompt_id: int) -> bool:
    """Whether another connection (another process, say) sees the prompt."""
    found = database.execute("SELECT 1 FROM prompts WHERE id = ?", (prompt_id,)).fetchone()
    return found is not None


@pytest.fixture
def database(tmp_path):
    connection = sqlite3.connect(tmp_path / "mock.sqlite3")
    yield connection
    connection.close()


async def _create(store, database) -> int:
    async with store.grouped() as tx:
        prompt_id = tx.next_id("prompts")
        tx.insert_prompt(prompt_values(prompt_id))
    assert _committed(database, prompt_id), "answered before its commit"
    return prompt_id


def test_the_creates_of_one_round_share_one_commit(store, database):
    async def main():
        before = store.version("prompts")
        ids = await asyncio.gather(*(_create(store, database) for _ in range(5)))
        return before, ids, store.version("prompts")

    before, ids, after = asyncio.run(main())
    assert ids == [1, 2, 3, 4, 5]
    assert after[1] == before[1] + 1  # one commit wrote the prompts
    with store.begin() as tx:  # and the counter, once
        assert tx.next_id("prompts") == 6


def test_a_create_that_fails_fails_alone(store, database):
    async def refused():
        async with store.grouped() as tx:
            tx.insert_prompt(prompt_values(tx.next_id("prompts")))
            raise ValueError("refused")

    async def main():
        return await asyncio.gather(
            _create(store, database), refused(), _create(store, database), return_exceptions=True
        )

    first, failure, second = asyncio.run(main())
    assert isinstance(failure, ValueError)
    assert (first, second) == (1, 2)  # the refused create's id was given back
    assert [row[0] for row in database.execute("SELECT id FROM prompts ORDER BY id")] == [1, 2]


def test_a_commit_that_fails_fails_every_create_of_the_group(store, database, tmp_path):
    # A deferred foreign key is checked at COMMIT: the one way to make SQLite refuse it.
    database.executescript(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
        "CREATE TABLE child (id INTEGER PRIMARY KEY,"
        " parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    with store.read() as tx:
        tx.driver.execute("PRAGMA foreign_keys = ON")

    async def orphan():
        async with store.grouped() as tx:
            tx.driver.execute("INSERT INTO child (id, parent) VALUES (1, 42)")

    async def main():
        return await asyncio.gather(_create(store, database), orphan(), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(result, sqlite3.IntegrityError) for result in results), results
    assert database.execute("SELECT count(*) FROM prompts").fetchone()[0] == 0
    assert database.execute("SELECT count(*) FROM child").fetchone()[0] == 0
    assert asyncio.run(_create(store, database)) == 1  # and the store goes on


def test_a_create_cancelled_while_it_waits_is_committed_and_alone_cancelled(store, database):
    async def main():
        first = asyncio.ensure_future(_create(store, database))
        second = asyncio.ensure_future(_create(store, database))
        await asyncio.sleep(0)  # both wait for the group's commit
        first.cancel()
        assert await second == 2
        with pytest.raises(asyncio.CancelledError):
            await first

    asyncio.run(main())
    assert _committed(database, 1)
    assert _committed(database, 2)


def test_the_loop_using_the_store_commits_the_open_group_first(store, database):
    async def main():
        create = asyncio.ensure_future(_create(store, database))
        await asyncio.sleep(0)  # the create has run up to its wait for the commit
        assert not _committed(database, 1)
        with store.read() as tx:
            assert tx.prompt("t", 1) is not None
        assert _committed(database, 1)
        return await create

    assert asyncio.run(main()) == 1


def test_a_grouped_block_must_not_await(store):
    async def awaiting():
        async with store.grouped() as tx:
            tx.next_id("prompts")
            await asyncio.sleep(0)

    async def main():
        return await asyncio.gather(awaiting(), awaiting(), return_exceptions=True)

    first, second = asyncio.run(main())
    assert first is None  # it commits once it leaves its block
    assert isinstance(second, RuntimeError)


def test_concurrent_creates_over_http_are_all_kept_across_a_restart(tmp_path):
    settings = replace(DEFAULTS, ephemeral=False, data_dir=tmp_path)
    texts = [f"<faceid:{999 if n % 5 == 0 else 1}:1> picture {n}" for n in range(60)]
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        tune = client.post(
            "/tunes", json={"tune": {"title": "Face", "name": "man", "model_type": "faceid",
                                     "image_urls": ["https://example.com/face.jpg"]}},
        )  # fmt: skip
        assert tune.status_code == 201, tune.text
        texts = [text.replace("<faceid:1:", f"<faceid:{tune.json()['id']}:") for text in texts]
        with ThreadPoolExecutor(12) as pool:
            answers = list(
                pool.map(
                    lambda text: client.post(
                        "/tunes/690204/prompts", json={"prompt": {"text": text}}
                    ),
                    texts,
                )
            )
    created = {a.json()["id"]: a.json() for a in answers if a.status_code == 201}
    refused = [a for a in answers if a.status_code != 201]
    assert len(refused) == 12
    assert all(a.status_code == 422 for a in refused)
    assert sorted(created) == list(range(1, 49))  # no id lost to a refused create
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        for prompt_id, answered in created.items():
            read = client.get(f"/prompts/{prompt_id}").json()
            assert {**read, "url": None} == {**answered, "url": None}  # the port is new


def test_identical_creates_of_one_group_are_one_prompt_with_idempotency(tmp_path):
    settings = replace(DEFAULTS, ephemeral=False, data_dir=tmp_path, idempotency=True)
    body = {"prompt": {"text": "the same picture", "seed": 7}}
    with LiveServer(settings) as server, httpx.Client(base_url=server.url, headers=AUTH) as client:
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda _: client.post("/tunes/690204/prompts", json=body), range(16))
            )
        assert {a.status_code for a in answers} == {201}
        assert len({a.json()["id"] for a in answers}) == 1
        assert len(client.get("/prompts").json()) == 1
