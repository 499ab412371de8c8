"""State in SQL through SQLAlchemy Core: SQLite (WAL) by default, in memory for tests.

One :class:`Store` owns the engine; ``store.begin()`` opens one transaction as a
:class:`Tx` whose methods are every query the mock runs. Rows come back as plain
mappings; shaping them into API JSON is ``serialize``'s job, not the store's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    CursorResult,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.pool import StaticPool

Row = dict[str, Any]
SHARED_TENANT = ""  # the gallery: visible to every tenant
MAX_ID = 2**63 - 1

metadata = MetaData()

tunes = Table(
    "tunes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False, index=True),
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
)

prompts = Table(
    "prompts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False, index=True),
    Column("tune_id", Integer, nullable=False, index=True),
    Column("attrs", JSON, nullable=False),
    Column("idem_key", String(64), index=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("started_training_at", String(32)),
    Column("trained_at", String(32)),
    Column("ready_after", Float),
    Column("image_count", Integer, nullable=False, default=0),
    Column("user_error", Text),
    Column("polls", Integer, nullable=False, default=0),
    Column("liked", Boolean, nullable=False, default=False),
)

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("tenant", String(64), nullable=False, index=True),
    Column("entity", String(16), nullable=False),
    Column("entity_id", Integer, nullable=False),
    Column("chain", String(48), nullable=False),
    Column("url", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float),
    Column("status_code", Integer),
    Column("latency_ms", Float),
    Column("error", Text),
    Column("finished_at", String(32)),
)

violations = Table(
    "violations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
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
    Column("value", Integer, nullable=False),
)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives the process being killed (the WAL is in the
    # OS's hands); only a power cut can cost the last transactions.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url in ("sqlite://", "sqlite:///:memory:"):
        return create_engine(
            "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


class Store:
    """The engine; ``now`` gives the API clock's time, which decides what has expired."""

    def __init__(self, url: str, now: Callable[[], str]) -> None:
        self.engine = make_engine(url)
        self.now = now
        metadata.create_all(self.engine)

    @contextmanager
    def begin(self) -> Iterator[Tx]:
        with self.engine.begin() as connection:
            yield Tx(connection, self.now())

    def close(self) -> None:
        self.engine.dispose()


def _one(result: CursorResult[Any]) -> Row | None:
    row = result.mappings().first()
    return dict(row) if row is not None else None


def _all(result: CursorResult[Any]) -> list[Row]:
    return [dict(row) for row in result.mappings()]


def _visible(tenant: str, now: str) -> Any:
    """The tenant's tunes and the gallery, less tunes expired (30 days after training)
    unless they are kept with ``auto_extend``."""
    alive = or_(tunes.c.expires_at.is_(None), tunes.c.expires_at > now, tunes.c.auto_extend)
    return and_(or_(tunes.c.tenant == tenant, tunes.c.tenant == SHARED_TENANT), alive)


class Tx:
    """One transaction: every read and write of the mock's state."""

    def __init__(self, connection: Connection, now: str) -> None:
        self.connection = connection
        self.now = now

    # ids -----------------------------------------------------------------
    def next_id(self, name: str, skip: frozenset[int] = frozenset()) -> int:
        """The next id of a per-server sequence; ids in ``skip`` are never handed out."""
        while True:
            value = self.connection.execute(
                update(counters)
                .where(counters.c.name == name)
                .values(value=counters.c.value + 1)
                .returning(counters.c.value)
            ).scalar()
            if value is None:
                self.connection.execute(insert(counters).values(name=name, value=1))
                value = 1
            if value not in skip:
                return int(value)

    # tunes ---------------------------------------------------------------
    def insert_tune(self, row: dict[str, Any]) -> None:
        self.connection.execute(insert(tunes).values(**row))

    def ensure_tune(self, row: dict[str, Any]) -> None:
        if self.connection.execute(select(tunes.c.id).where(tunes.c.id == row["id"])).first():
            return
        self.insert_tune(row)

    def tune(self, tenant: str, tune_id: int) -> Row | None:
        query = select(tunes).where(tunes.c.id == tune_id, _visible(tenant, self.now))
        return _one(self.connection.execute(query))

    def tune_by_id(self, tune_id: int) -> Row | None:
        query = select(tunes).where(tunes.c.id == tune_id)
        return _one(self.connection.execute(query))

    def has_own_tunes(self, tenant: str) -> bool:
        query = select(tunes.c.id).where(tunes.c.tenant == tenant).limit(1)
        return self.connection.execute(query).first() is not None

    def tune_by_title(self, tenant: str, title: str) -> Row | None:
        query = select(tunes).where(_visible(tenant, self.now), tunes.c.title == title)
        return _one(self.connection.execute(query.order_by(tunes.c.id).limit(1)))

    def list_tunes(self, tenant: str, limit: int, before_id: int | None, offset: int) -> list[Row]:
        query = select(tunes).where(_visible(tenant, self.now))
        if before_id is not None:
            query = query.where(tunes.c.id < before_id)
        query = query.order_by(tunes.c.id.desc()).limit(limit).offset(offset)
        return _all(self.connection.execute(query))

    def update_tune(self, tune_id: int, **values: Any) -> None:
        self.connection.execute(update(tunes).where(tunes.c.id == tune_id).values(**values))

    def delete_tune(self, tenant: str, tune_id: int) -> list[int]:
        """Delete a tenant's tune and its prompts; returns the deleted prompt ids."""
        prompt_ids = list(
            self.connection.execute(
                select(prompts.c.id).where(prompts.c.tenant == tenant, prompts.c.tune_id == tune_id)
            ).scalars()
        )
        self.connection.execute(
            delete(prompts).where(prompts.c.tenant == tenant, prompts.c.tune_id == tune_id)
        )
        self.connection.execute(
            delete(tunes).where(tunes.c.tenant == tenant, tunes.c.id == tune_id)
        )
        return prompt_ids

    def due_tunes(self, now: float) -> list[Row]:
        query = select(tunes).where(tunes.c.trained_at.is_(None), tunes.c.ready_after <= now)
        return _all(self.connection.execute(query.order_by(tunes.c.id)))

    # prompts -------------------------------------------------------------
    def insert_prompt(self, row: dict[str, Any]) -> None:
        self.connection.execute(insert(prompts).values(**row))

    def prompt(self, tenant: str, prompt_id: int, tune_id: int | None = None) -> Row | None:
        query = select(prompts).where(prompts.c.id == prompt_id, prompts.c.tenant == tenant)
        if tune_id is not None:
            query = query.where(prompts.c.tune_id == tune_id)
        return _one(self.connection.execute(query))

    def prompt_by_id(self, prompt_id: int) -> Row | None:
        query = select(prompts).where(prompts.c.id == prompt_id)
        return _one(self.connection.execute(query))

    def prompt_by_key(self, tenant: str, key: str) -> Row | None:
        query = select(prompts).where(prompts.c.tenant == tenant, prompts.c.idem_key == key)
        return _one(self.connection.execute(query.order_by(prompts.c.id).limit(1)))

    def list_prompts(
        self, tenant: str, tune_id: int | None, limit: int, before_id: int | None, offset: int
    ) -> list[Row]:
        query = select(prompts).where(prompts.c.tenant == tenant)
        if tune_id is not None:
            query = query.where(prompts.c.tune_id == tune_id)
        if before_id is not None:
            query = query.where(prompts.c.id < before_id)
        query = query.order_by(prompts.c.id.desc()).limit(limit).offset(offset)
        return _all(self.connection.execute(query))

    def update_prompt(self, prompt_id: int, **values: Any) -> None:
        self.connection.execute(update(prompts).where(prompts.c.id == prompt_id).values(**values))

    def count_poll(self, prompt_id: int) -> int:
        """Count one read of a pending prompt; returns the reads so far."""
        polls = self.connection.execute(
            update(prompts)
            .where(prompts.c.id == prompt_id)
            .values(polls=prompts.c.polls + 1)
            .returning(prompts.c.polls)
        ).scalar()
        return int(polls or 0)

    def delete_prompt(self, tenant: str, prompt_id: int) -> None:
        self.connection.execute(
            delete(prompts).where(prompts.c.tenant == tenant, prompts.c.id == prompt_id)
        )

    def due_prompts(self, now: float) -> list[Row]:
        """Pending prompts whose time has come and whose tune is trained."""
        query = (
            select(prompts)
            .join(tunes, tunes.c.id == prompts.c.tune_id)
            .where(
                prompts.c.trained_at.is_(None),
                prompts.c.user_error.is_(None),
                prompts.c.ready_after <= now,
                tunes.c.trained_at.is_not(None),
            )
            .order_by(prompts.c.id)
        )
        return _all(self.connection.execute(query))

    # sandbox -------------------------------------------------------------
    def bring_forward(self, seconds: float) -> None:
        """Pending work becomes due ``seconds`` sooner (the clock was advanced)."""
        for table, column in (
            (tunes, tunes.c.ready_after),
            (prompts, prompts.c.ready_after),
            (callbacks, callbacks.c.next_attempt_at),
        ):
            self.connection.execute(
                update(table).where(column.is_not(None)).values({column: column - seconds})
            )

    def reset(self, tenant: str | None) -> list[str]:
        """Forget a tenant (or everyone but the gallery); returns the file prefixes to drop."""
        tune_query = select(tunes.c.id).where(tunes.c.tenant != SHARED_TENANT)
        prompt_query = select(prompts.c.id)
        if tenant is not None:
            tune_query = tune_query.where(tunes.c.tenant == tenant)
            prompt_query = prompt_query.where(prompts.c.tenant == tenant)
        prefixes = [f"tunes/{i}" for i in self.connection.execute(tune_query).scalars()]
        prefixes += [f"prompts/{i}" for i in self.connection.execute(prompt_query).scalars()]
        for table in (prompts, callbacks, violations):
            query = delete(table)
            if tenant is not None:
                query = query.where(table.c.tenant == tenant)
            self.connection.execute(query)
        query = delete(tunes).where(tunes.c.tenant != SHARED_TENANT)
        if tenant is not None:
            query = query.where(tunes.c.tenant == tenant)
        self.connection.execute(query)
        if tenant is None:
            self.connection.execute(delete(counters))
        return prefixes

    # callbacks -----------------------------------------------------------
    def insert_callback(self, row: dict[str, Any]) -> None:
        self.connection.execute(insert(callbacks).values(**row))

    def due_callbacks(self, now: float, limit: int) -> list[Row]:
        query = (
            select(callbacks)
            .where(callbacks.c.status == "pending", callbacks.c.next_attempt_at <= now)
            .order_by(callbacks.c.id)
            .limit(limit)
        )
        return _all(self.connection.execute(query))

    def next_callback_due(self, after: float) -> float | None:
        """The earliest retry time of a pending callback later than ``after``."""
        query = select(func.min(callbacks.c.next_attempt_at)).where(
            callbacks.c.status == "pending", callbacks.c.next_attempt_at > after
        )
        value = self.connection.execute(query).scalar()
        return float(value) if value is not None else None

    def update_callback(self, callback_id: int, **values: Any) -> None:
        self.connection.execute(
            update(callbacks).where(callbacks.c.id == callback_id).values(**values)
        )

    def list_callbacks(self, tenant: str | None, filters: dict[str, Any]) -> list[Row]:
        query = select(callbacks)
        if tenant is not None:
            query = query.where(callbacks.c.tenant == tenant)
        for name, value in filters.items():
            query = query.where(callbacks.c[name] == value)
        return _all(self.connection.execute(query.order_by(callbacks.c.id)))

    def clear_callbacks(self, tenant: str | None) -> None:
        query = delete(callbacks).where(callbacks.c.status != "pending")
        if tenant is not None:
            query = query.where(callbacks.c.tenant == tenant)
        self.connection.execute(query)

    # violations ----------------------------------------------------------
    def insert_violation(self, row: dict[str, Any]) -> None:
        self.connection.execute(insert(violations).values(**row))

    def list_violations(self, tenant: str | None) -> list[Row]:
        query = select(violations).order_by(violations.c.id)
        if tenant is not None:
            query = query.where(violations.c.tenant == tenant)
        return _all(self.connection.execute(query))

    def clear_violations(self, tenant: str | None) -> None:
        query = delete(violations)
        if tenant is not None:
            query = query.where(violations.c.tenant == tenant)
        self.connection.execute(query)

    def next_due(self) -> float | None:
        """The earliest time any pending work becomes due."""
        tune_due = self.connection.execute(
            select(func.min(tunes.c.ready_after)).where(tunes.c.trained_at.is_(None))
        ).scalar()
        prompt_due = self.connection.execute(
            select(func.min(prompts.c.ready_after)).where(
                prompts.c.trained_at.is_(None), prompts.c.user_error.is_(None)
            )
        ).scalar()
        candidates = [float(v) for v in (tune_due, prompt_due) if v is not None]
        return min(candidates) if candidates else None

    # dashboard (read-only) ----------------------------------------------
    def recent_tunes(self, tenant: str | None, limit: int) -> list[Row]:
        """Tenants' own tunes (not the gallery), newest first; every tenant's without one."""
        query = select(tunes).where(tunes.c.tenant != SHARED_TENANT)
        if tenant is not None:
            query = query.where(tunes.c.tenant == tenant)
        return _all(self.connection.execute(query.order_by(tunes.c.id.desc()).limit(limit)))

    def recent_prompts(self, tenant: str | None, limit: int) -> list[Row]:
        """Prompts, newest first; every tenant's without one."""
        query = select(prompts)
        if tenant is not None:
            query = query.where(prompts.c.tenant == tenant)
        return _all(self.connection.execute(query.order_by(prompts.c.id.desc()).limit(limit)))

    def recent_callbacks(self, tenant: str | None, limit: int) -> list[Row]:
        """The delivery log, newest first."""
        query = select(callbacks)
        if tenant is not None:
            query = query.where(callbacks.c.tenant == tenant)
        return _all(self.connection.execute(query.order_by(callbacks.c.id.desc()).limit(limit)))

    def recent_violations(self, tenant: str | None, limit: int) -> list[Row]:
        """The violation log, newest first."""
        query = select(violations)
        if tenant is not None:
            query = query.where(violations.c.tenant == tenant)
        return _all(self.connection.execute(query.order_by(violations.c.id.desc()).limit(limit)))
