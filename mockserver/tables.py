"""The mock's tables, as SQLAlchemy Core metadata: the same schema on SQLite and PostgreSQL.

Ids are 64-bit (``BigInteger``), as the API's are. Work that waits for its time
(a tune training, a prompt rendering, a callback) carries ``claimed_until``: a
replica that takes the work sets it a lease ahead, so no other replica takes the
same row while the lease runs, and any replica takes it again once the lease has
run out (the one holding it died). ``idem_key`` columns are set only with
``--idempotency``; a unique index on them, not a check-then-insert, keeps two
replicas from creating the same object twice.

Lists are pages of one tenant's rows, newest first: ``(tenant, id)`` indexes (and
``(tenant, tune_id, id)`` for a tune's prompts) serve a page as one index range
read backwards, however many rows the table holds.

The lifecycle looks for due prompts at least twice a second. ``prompts_pending``
(the unfinished prompts by due time) and ``prompts_claimed`` (the few being worked on)
make each look an index range: with 50,000 prompts waiting, the table scans they
replace took 15 ms each, on the event loop. A new prompt is written into the first,
not the second (it has no claim). On PostgreSQL both are whole indexes.

On SQLite an ``id`` is declared ``INTEGER`` (:data:`ID`), which makes it the table's
rowid: a row is found by id in one B-tree, and an insert writes no separate
primary-key index. The ``idem_key`` indexes hold only the rows that have a key
(``sqlite_where``), so without ``--idempotency`` inserts write none of them. Each
is a page appended to the WAL on every commit; together they were a third of the
cost of creating a prompt. (PostgreSQL keeps whole ``idem_key`` indexes: a partial
one there would mean loading its dialect at every start.)
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()
ID = BigInteger().with_variant(Integer, "sqlite")
"""A 64-bit id: on SQLite the rowid (``INTEGER`` is 64-bit there too)."""
HAS_KEY = text("idem_key IS NOT NULL")
PENDING = text("trained_at IS NULL AND user_error IS NULL")
CLAIMED = text("claimed_until IS NOT NULL")

tunes = Table(
    "tunes",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False),
    Column("title", Text, nullable=False),
    Column("model_type", String(16)),
    Column("branch", String(16), nullable=False),
    Column("attrs", JSON, nullable=False),
    Column("orig_images", JSON, nullable=False),
    Column("face_key", Text),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("started_training_at", String(32)),
    Column("trained_at", String(32)),
    Column("eta", String(32)),
    Column("expires_at", String(32)),
    Column("auto_extend", Boolean, nullable=False, default=False),
    Column("ready_after", Float),
    Column("claimed_until", Float),
    Column("idem_key", Text),
    Index("tunes_idem_key", "tenant", "idem_key", unique=True, sqlite_where=HAS_KEY),
    Index("tunes_tenant_id", "tenant", "id"),
)

prompts = Table(
    "prompts",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False),
    Column("tune_id", BigInteger, nullable=False),
    Column("attrs", JSON, nullable=False),
    Column("idem_key", String(64)),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("started_training_at", String(32)),
    Column("trained_at", String(32)),
    Column("ready_after", Float),
    Column("claimed_until", Float),
    Column("image_count", Integer, nullable=False, default=0),
    Column("user_error", Text),
    Column("polls", Integer, nullable=False, default=0),
    Column("liked", Boolean, nullable=False, default=False),
    Index("prompts_idem_key", "tenant", "idem_key", unique=True, sqlite_where=HAS_KEY),
    Index("prompts_tenant_id", "tenant", "id"),
    Index("prompts_tenant_tune_id_id", "tenant", "tune_id", "id"),
    Index("prompts_pending", "ready_after", sqlite_where=PENDING),
    Index("prompts_claimed", "claimed_until", sqlite_where=CLAIMED),
)

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False, index=True),
    Column("entity", String(16), nullable=False),
    Column("entity_id", BigInteger, nullable=False),
    Column("chain", String(48), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float),
    Column("claimed_until", Float),
    Column("interrupted", Integer, nullable=False, default=0),
    Column("status_code", Integer),
    Column("latency_ms", Float),
    Column("error", Text),
    Column("finished_at", String(32)),
)

violations = Table(
    "violations",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False, index=True),
    Column("operation_id", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("field", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("request", JSON, nullable=False),
    Column("created_at", String(32), nullable=False),
)

counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("value", BigInteger, nullable=False),
)
COUNTERS = ("tunes", "prompts", "callbacks", "violations")

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True),
)
