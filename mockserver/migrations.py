"""The store's own versioned schema, brought up to date when a replica starts.

An empty database gets the whole schema of :mod:`tables` at once. A database of an
earlier version gets each later step in order. Every replica runs this at start,
under a lock (PostgreSQL: an advisory lock; SQLite: the write lock), so replicas
starting together apply each step once. Version 1 is the schema of the releases
before versioning, recognised by its tables. A step is SQL that both databases
run, or a function for what differs between them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, Engine, func, insert, inspect, select
from sqlalchemy.schema import CreateTable

from .tables import (
    COUNTERS,
    callbacks,
    counters,
    metadata,
    prompts,
    schema_version,
    tunes,
    violations,
)

log = logging.getLogger("astria_mock.store")
ADVISORY_LOCK = 0x4153_5452_4941  # "ASTRIA": one lock id for every replica of the schema


def _sqlite_rowid_tables(connection: Connection) -> None:
    """SQLite: rebuild the tables with ids so that each id is the rowid, and the
    ``idem_key`` indexes hold only keyed rows (tables.py explains both). SQLite cannot
    change a column's type in place: each table is copied into one made anew."""
    if connection.dialect.name != "sqlite":
        return
    for table in (tunes, prompts, callbacks, violations):
        old = f"{table.name}_v3"
        connection.exec_driver_sql(f"ALTER TABLE {table.name} RENAME TO {old}")
        connection.execute(CreateTable(table))
        columns = ", ".join(column.name for column in table.c)
        connection.exec_driver_sql(
            f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {old}"
        )
        connection.exec_driver_sql(f"DROP TABLE {old}")  # and its indexes
        for index in table.indexes:
            index.create(connection)


def _pending_work_indexes(connection: Connection) -> None:
    """The indexes of unfinished and claimed prompts (tables.py explains), in place of one
    on ``tune_id`` alone, which ``(tenant, tune_id, id)`` serves."""
    connection.exec_driver_sql("DROP INDEX IF EXISTS ix_prompts_tune_id")
    for index in prompts.indexes:
        if index.name in ("prompts_pending", "prompts_claimed"):
            index.create(connection, checkfirst=True)  # version 4's rebuild made them


Step = str | Callable[[Connection], None]
STEPS: dict[int, tuple[Step, ...]] = {
    2: (
        # Work claimed by one replica at a time (tables.py explains the lease).
        "ALTER TABLE tunes ADD COLUMN claimed_until FLOAT",
        "ALTER TABLE prompts ADD COLUMN claimed_until FLOAT",
        "ALTER TABLE callbacks ADD COLUMN claimed_until FLOAT",
        "ALTER TABLE callbacks ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX ix_callbacks_chain ON callbacks (chain)",
        # Idempotency by a unique index. Version 1 kept a prompt's key even without
        # --idempotency; keep only the first prompt of each key.
        "ALTER TABLE tunes ADD COLUMN idem_key TEXT",
        "UPDATE prompts SET idem_key = NULL WHERE id NOT IN "
        "(SELECT MIN(id) FROM prompts WHERE idem_key IS NOT NULL GROUP BY tenant, idem_key)",
        "DROP INDEX IF EXISTS ix_prompts_idem_key",
        "CREATE UNIQUE INDEX tunes_idem_key ON tunes (tenant, idem_key)",
        "CREATE UNIQUE INDEX prompts_idem_key ON prompts (tenant, idem_key)",
    ),
    3: (
        # List pages as index ranges (tables.py explains); each replaces a tenant index.
        "CREATE INDEX tunes_tenant_id ON tunes (tenant, id)",
        "CREATE INDEX prompts_tenant_id ON prompts (tenant, id)",
        "CREATE INDEX prompts_tenant_tune_id_id ON prompts (tenant, tune_id, id)",
        "DROP INDEX IF EXISTS ix_tunes_tenant",
        "DROP INDEX IF EXISTS ix_prompts_tenant",
    ),
    4: (_sqlite_rowid_tables,),
    5: (_pending_work_indexes,),
}
SCHEMA_VERSION = max(STEPS)


def migrate(engine: Engine) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version found (0: empty)."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK)))
        found = _version(connection)
        if found == 0:
            metadata.create_all(connection)
        else:
            if found < SCHEMA_VERSION:
                schema_version.create(connection, checkfirst=True)
            for version in range(found + 1, SCHEMA_VERSION + 1):
                log.info("migrating the store to version %d", version)
                for step in STEPS[version]:
                    if isinstance(step, str):
                        connection.exec_driver_sql(step)
                    else:
                        step(connection)
        if found < SCHEMA_VERSION:
            connection.execute(schema_version.delete())
            connection.execute(insert(schema_version).values(version=SCHEMA_VERSION))
        have = set(connection.execute(select(counters.c.name)).scalars())
        for name in COUNTERS:
            if name not in have:
                connection.execute(insert(counters).values(name=name, value=0))
    if found > SCHEMA_VERSION:
        log.warning(
            "the store is at schema version %d, newer than this release's %d",
            found,
            SCHEMA_VERSION,
        )
    return found


def _version(connection: Connection) -> int:
    tables = set(inspect(connection).get_table_names())
    if "schema_version" in tables:
        return int(connection.execute(select(func.max(schema_version.c.version))).scalar() or 0)
    return 1 if "tunes" in tables else 0
