"""The store's versioned schema: a database of an earlier version opens with nothing lost."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from conftest import KEY
from sqlalchemy import Engine, create_engine, inspect, select
from starlette.testclient import TestClient

from mockserver.app import create_app
from mockserver.auth import tenant_for
from mockserver.migrations import SCHEMA_VERSION, migrate
from mockserver.settings import Settings
from mockserver.store import database_url
from mockserver.tables import metadata, prompts, tunes

V1_SCHEMA = Path(__file__).parent / "data" / "schema_v1.sql"
V2_SCHEMA = Path(__file__).parent / "data" / "schema_v2.sql"
V3_SCHEMA = Path(__file__).parent / "data" / "schema_v3.sql"
V4_SCHEMA = Path(__file__).parent / "data" / "schema_v4.sql"
STAMP = "2026-11-01T10:00:00.000Z"
TENANT = tenant_for(f"Bearer {KEY}", frozenset())


def v1_database(path: Path) -> None:
    """A data dir's database as the releases before versioning left it."""
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA.read_text())
    attrs = json.dumps({"name": "man", "token": "ohwx", "is_api": True})
    db.execute(
        "INSERT INTO tunes VALUES (1, ?, 'Old tune', 'faceid', 'sd15', ?, '[]', NULL, ?, ?, ?, ?,"
        " ?, NULL, 0, NULL)",
        (TENANT, attrs, STAMP, STAMP, STAMP, STAMP, STAMP),
    )
    prompt = json.dumps({"text": "old", "num_images": 1, "seed": 5, "width": 512, "height": 512})
    for prompt_id in (1, 2):  # version 1 kept the same key on every identical prompt
        db.execute(
            "INSERT INTO prompts VALUES (?, ?, 690204, ?, 'samekey', ?, ?, NULL, NULL, 1e18, 0,"
            " NULL, 0, 0)",
            (prompt_id, TENANT, prompt, STAMP, STAMP),
        )
    db.execute(
        "INSERT INTO callbacks VALUES (1, ?, 'tune', 1, 'tune:1', 'http://127.0.0.1:9/x', '{}',"
        " ?, 'delivered', 1, NULL, 204, 1.5, NULL, ?)",
        (TENANT, STAMP, STAMP),
    )
    db.executemany(
        "INSERT INTO counters VALUES (?, ?)", [("tunes", 1), ("prompts", 2), ("callbacks", 1)]
    )
    db.commit()
    db.close()


def test_version_1_database_is_migrated_and_keeps_its_objects(tmp_path):
    v1_database(tmp_path / "mock.sqlite3")
    app = create_app(Settings(data_dir=tmp_path, prompt_seconds=60.0))

    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        headers = {"Authorization": f"Bearer {KEY}"}
        tune = client.get("/tunes/1", headers=headers).json()
        assert tune["title"] == "Old tune"
        assert [p["id"] for p in client.get("/prompts", headers=headers).json()] == [2, 1]
        created = client.post(
            "/tunes/690204/prompts", json={"prompt": {"text": "new"}}, headers=headers
        )
        assert created.status_code == 201
        assert created.json()["id"] == 3  # the counters carried over
        log = client.get("/_mock/callbacks", headers=headers).json()["callbacks"]
        assert [(c["id"], c["status"], c["interrupted"]) for c in log] == [(1, "delivered", 0)]

    db = sqlite3.connect(tmp_path / "mock.sqlite3")
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    keys = db.execute("SELECT id, idem_key FROM prompts ORDER BY id").fetchall()
    assert keys == [(1, "samekey"), (2, None), (3, None)]


def test_migrating_twice_changes_nothing(tmp_path):
    v1_database(tmp_path / "mock.sqlite3")
    engine = create_engine(f"sqlite:///{tmp_path / 'mock.sqlite3'}")
    assert migrate(engine) == 1
    columns = {c["name"] for c in inspect(engine).get_columns("callbacks")}
    assert {"claimed_until", "interrupted"} <= columns
    assert migrate(engine) == SCHEMA_VERSION
    assert migrate(create_engine("sqlite://")) == 0


def declared_indexes() -> dict[str, set[tuple[str, tuple[str, ...], bool]]]:
    """Every table's indexes as tables.py declares them (a fresh store has exactly these)."""
    return {
        table.name: {(i.name, tuple(c.name for c in i.columns), i.unique) for i in table.indexes}
        for table in metadata.sorted_tables
    }


def found_indexes(engine: Engine) -> dict[str, set[tuple[str, tuple[str, ...], bool]]]:
    inspector = inspect(engine)
    return {
        name: {
            (i["name"], tuple(i["column_names"]), bool(i["unique"]))
            for i in inspector.get_indexes(name)
        }
        for name in inspector.get_table_names()
    }


def test_a_version_1_store_gets_the_indexes_of_a_new_one(tmp_path):
    v1_database(tmp_path / "mock.sqlite3")
    engine = create_engine(f"sqlite:///{tmp_path / 'mock.sqlite3'}")
    migrate(engine)
    assert found_indexes(engine) == declared_indexes()
    assert {"tunes_tenant_id", "prompts_tenant_id", "prompts_tenant_tune_id_id"} <= {
        name for table in found_indexes(engine).values() for name, _, _ in table
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mock.sqlite3'}"
    return database_url(request.getfixturevalue("postgres_url"))


def load_schema(engine: Engine, schema: Path) -> None:
    with engine.begin() as connection:
        for statement in schema.read_text().split(";\n"):
            if statement.strip():
                connection.exec_driver_sql(statement)


def test_a_version_2_store_comes_up_to_the_list_indexes(empty_url: str):
    engine = create_engine(empty_url)
    load_schema(engine, V2_SCHEMA)
    before = found_indexes(engine)
    assert {name for name, _, _ in before["tunes"]} == {"tunes_idem_key", "ix_tunes_tenant"}

    assert migrate(engine) == 2
    assert found_indexes(engine) == declared_indexes()
    assert {name for name, _, _ in found_indexes(engine)["prompts"]} == {
        "prompts_idem_key",
        "prompts_tenant_id",
        "prompts_tenant_tune_id_id",
        "prompts_pending",
        "prompts_claimed",
    }
    assert migrate(engine) == SCHEMA_VERSION == 5
    engine.dispose()


def test_a_version_3_store_keeps_its_rows_with_ids_as_rowids(empty_url: str):
    engine = create_engine(empty_url)
    load_schema(engine, V3_SCHEMA)
    with engine.begin() as connection:
        connection.execute(
            tunes.insert().values(
                id=7, tenant=TENANT, title="Old tune", model_type="faceid", branch="sd15",
                attrs={"name": "man", "token": "ohwx", "is_api": True}, orig_images=[],
                created_at=STAMP, updated_at=STAMP, started_training_at=STAMP,
                trained_at=STAMP, eta=STAMP, auto_extend=False, idem_key="tune-key",
            )
        )  # fmt: skip
        prompt = {"text": "old", "num_images": 1, "seed": 5, "width": 512, "height": 512}
        for prompt_id, key in ((8, "k"), (9, None), (2**62, None)):
            connection.execute(
                prompts.insert().values(
                    id=prompt_id, tenant=TENANT, tune_id=7, attrs=prompt, idem_key=key,
                    created_at=STAMP, updated_at=STAMP, image_count=0, polls=0, liked=False,
                )
            )  # fmt: skip
        connection.exec_driver_sql("INSERT INTO counters VALUES ('prompts', 9)")

    assert migrate(engine) == 3
    assert found_indexes(engine) == declared_indexes()
    with engine.connect() as connection:
        rows = connection.execute(select(prompts.c.id, prompts.c.idem_key).order_by(prompts.c.id))
        assert rows.all() == [(8, "k"), (9, None), (2**62, None)]
        assert connection.execute(select(tunes.c.title, tunes.c.idem_key)).all() == [
            ("Old tune", "tune-key")
        ]
        if engine.dialect.name == "sqlite":
            for table in ("tunes", "prompts", "callbacks", "violations"):
                declared = {row[1]: row[2] for row in connection.exec_driver_sql(
                    f"PRAGMA table_info({table})"
                )}  # fmt: skip
                assert declared["id"] == "INTEGER", table  # an alias of the rowid
            # Only keyed rows are in the idempotency indexes.
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'prompts_idem_key'"
            ).scalar()
            assert sql.endswith("WHERE idem_key IS NOT NULL")
    engine.dispose()

    # The migrated store serves the old rows, and idempotency still finds keyed ones.
    if engine.dialect.name == "sqlite":
        data_dir = Path(engine.url.database).parent
        app = create_app(Settings(data_dir=data_dir, prompt_seconds=60.0))
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            headers = {"Authorization": f"Bearer {KEY}"}
            assert client.get("/tunes/7", headers=headers).json()["title"] == "Old tune"
            body = {"prompt": {"text": "new"}}
            created = client.post("/tunes/690204/prompts", json=body, headers=headers)
            assert created.json()["id"] == 10  # the counter carried over


def test_a_version_4_store_gets_the_indexes_of_pending_work(empty_url: str):
    engine = create_engine(empty_url)
    load_schema(engine, V4_SCHEMA)
    with engine.begin() as connection:
        for prompt_id, ready_after in ((1, 100.0), (2, 50.0)):
            connection.execute(
                prompts.insert().values(
                    id=prompt_id, tenant=TENANT, tune_id=690204, attrs={"text": "old"},
                    created_at=STAMP, updated_at=STAMP, ready_after=ready_after,
                    image_count=0, polls=0, liked=False,
                )
            )  # fmt: skip
    assert "ix_prompts_tune_id" in {name for name, _, _ in found_indexes(engine)["prompts"]}

    assert migrate(engine) == 4
    assert found_indexes(engine) == declared_indexes()
    with engine.connect() as connection:
        assert connection.execute(select(prompts.c.id).order_by(prompts.c.id)).scalars().all() == [
            1,
            2,
        ]
        if engine.dialect.name == "sqlite":
            sql = connection.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'prompts_pending'"
            ).scalar()
            assert sql.endswith("WHERE trained_at IS NULL AND user_error IS NULL")
    engine.dispose()
