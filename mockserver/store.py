"""State in SQL through SQLAlchemy Core: SQLite (WAL) by default, PostgreSQL for replicas.

One :class:`Store` owns the engine; ``store.begin()`` opens one transaction, and
``store.read()`` a read, as a :class:`Tx` whose methods are every query the mock
runs. Rows come back as plain mappings; shaping them into API JSON is
``serialize``'s job, not the store's.
The schema is in :mod:`tables`, its versions in :mod:`migrations`.

Several processes may share one database (``--workers``, or replicas on
PostgreSQL). Ids come from counter rows updated in the creating transaction, so
they stay unique; timed work is *claimed* (``claim_*``) before it is done, with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so each piece is done by one replica.
On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: transactions of
several processes queue on the write lock instead of failing half-way; reads take
no lock.
"""

from __future__ import annotations

import asyncio
import importlib
import sqlite3
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Table,
    and_,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql import Subquery

from . import jsontext
from .checkpoint import Checkpointer
from .migrations import migrate
from .prepared import ANY_TABLE, Prepared, Stored, written_table
from .tables import callbacks, counters, prompts, tunes, violations

Row = dict[str, Any]
SHARED_TENANT = ""  # the gallery: visible to every tenant
MAX_ID = 2**63 - 1


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode: a commit survives the process being killed (the WAL is in the
    # OS's hands); only a power cut can cost the last transactions.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA wal_autocheckpoint=0")  # checkpoint.py does them, off the loop
    cursor.close()


READING = "astria_mock_reading"
"""Set in a connection's ``info`` while a ``Store.read()`` runs on it."""
WRITTEN = "astria_mock_written"
"""In a connection's ``info``: the tables its open transaction has written."""
Version = tuple[int, int, int]
"""``Store.version()``: commits through the store that wrote any table, and the table
read; then SQLite's ``data_version``."""


def _note_write(connection: Connection, _cursor: Any, statement: str, *_: Any) -> None:
    """Before SQLAlchemy runs ``statement``: remember the table it writes (see ``WRITTEN``)."""
    table = written_table(statement)
    if table is not None:
        connection.info.setdefault(WRITTEN, set()).add(table)


def _data_version(driver: sqlite3.Connection) -> int:
    version: int = driver.execute("PRAGMA data_version").fetchone()[0]
    return version


def _version(generations: dict[str, int], table: str, data_version: int) -> Version:
    return generations.get(ANY_TABLE, 0), generations.get(table, 0), data_version


def _sqlite_begin(connection: Connection) -> None:
    """A transaction SQLAlchemy begins takes the write lock at once (none inside a read),
    unless it runs inside one that ``Store`` began on the driver."""
    driver = connection.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    if not driver.in_transaction:
        connection.exec_driver_sql("BEGIN" if connection.info.get(READING) else "BEGIN IMMEDIATE")


def database_url(url: str) -> str:
    """``postgresql://...`` means the psycopg 3 driver; anything else is taken as given."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def make_engine(url: str) -> Engine:
    if url in ("sqlite://", "sqlite:///:memory:"):
        engine = create_engine(
            "sqlite://",
            poolclass=StaticPool,
            connect_args={"check_same_thread": False},
            json_serializer=jsontext.dumps_text,
            json_deserializer=jsontext.loads,
        )
    else:
        engine = create_engine(
            database_url(url),
            pool_pre_ping=True,
            json_serializer=jsontext.dumps_text,
            json_deserializer=jsontext.loads,
        )
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        event.listen(engine, "before_cursor_execute", _note_write)
    return engine


class Store:
    """The engine; ``now`` gives the API clock's time, which decides what has expired."""

    def __init__(self, url: str, now: Callable[[], str]) -> None:
        self.engine = make_engine(url)
        self.now = now
        migrate(self.engine)
        self._local = threading.local()
        self._all_held: list[Connection] = []
        # In memory there is one SQLite connection for every thread: one transaction at a time.
        in_memory = isinstance(self.engine.pool, StaticPool)
        self._serial: AbstractContextManager[Any] = threading.Lock() if in_memory else nullcontext()
        self._checkpointer: Checkpointer | None = None
        if self.engine.dialect.name == "sqlite" and not in_memory and self.engine.url.database:
            self._checkpointer = Checkpointer(self.engine.url.database)
            self._checkpointer.start()
        self._in_memory = in_memory
        self._group: _Group | None = None
        """The open group of write transactions (``grouped``), on the event loop's thread."""
        self._generations: dict[str, int] = {}
        """By table, the commits through this store that wrote it (:data:`ANY_TABLE`: a
        commit that wrote a table its SQL did not name), counted after each commit. A
        count is raised by the thread that committed; a count that two threads raised at
        once may come out one short, but each thread's connection sees the other's commit
        in ``data_version``."""

    def version(self, table: str) -> Version | None:
        """A value that changes whenever ``table`` may have: after each commit through this
        store that wrote it, and (``PRAGMA data_version``) each commit by any other
        connection or process. What was read from ``table`` while it kept one value can be
        answered again without reading. None where there is no such value (PostgreSQL),
        or inside a transaction (``Tx.version`` gives a write transaction's).

        On SQLite the pragma costs about a third of a one-row read: under load the read
        touched enough of SQLite's code and pages that it cost more than the rest of a
        ``GET /tunes/{id}``. Creating a prompt writes no tune, so a tune read stays valid
        under a stream of creates.
        """
        held = self._connection()
        self._settle(held)
        if not held.sqlite or held.driver.in_transaction:
            return None
        return _version(self._generations, table, _data_version(held.driver))

    def _note_commit(self, written: set[str] | None) -> None:
        """After a commit that wrote ``written`` (None: it is not known what)."""
        for table in written if written is not None else (ANY_TABLE,):
            self._generations[table] = self._generations.get(table, 0) + 1

    @property
    def shared(self) -> bool:
        """Whether other processes may write here too (always so for PostgreSQL)."""
        return self.engine.dialect.name != "sqlite" or self.engine.url.database not in (
            None,
            "",
            ":memory:",
        )

    def _connection(self) -> _Held:
        """This thread's connection (a pool checkout and return cost more than a short
        transaction)."""
        held: _Held | None = getattr(self._local, "held", None)
        if held is None or held.connection.closed or held.connection.invalidated:
            held = self._local.held = _Held.of(self.engine.connect())
            self._all_held.append(held.connection)
        return held

    def begin(self) -> AbstractContextManager[Tx]:
        """One read-write transaction."""
        return self._transaction(write=True)

    def grouped(self) -> AbstractAsyncContextManager[Tx]:
        """One read-write transaction of a request on the event loop, committed together
        with those of the other requests that begin before it is (group commit); leaving
        the block waits for that commit. Its body must not await. Elsewhere than on
        SQLite on disk, or off the event loop, it is ``begin()``.

        Each transaction is a savepoint within the group's: one that fails rolls back
        alone. The group commits in the loop's next round, or as soon as anything else
        on the loop's thread uses the store (``_settle``). Under a stream of creates,
        each commit cost more than everything else a prompt's insert does: the WAL frames
        of the pages it changed, written again for every row, and the file locks.
        """
        held = self._connection()
        group = self._group
        if group is not None and group.held is held:
            return _Member(group)
        if group is not None or not held.sqlite or self._in_memory:  # (a group elsewhere)
            return _Ungrouped(self.begin())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return _Ungrouped(self.begin())
        self._group = _Group(self, held, loop)
        return _Member(self._group)

    def _settle(self, held: _Held) -> None:
        """Commit the open group on ``held`` before anything else uses it, unless one of
        its transactions is running (then what runs is inside that transaction)."""
        group = self._group
        if group is not None and group.held is held and not group.running:
            group.commit()

    def read(self) -> AbstractContextManager[Tx]:
        """Reads only: on SQLite each statement sees what is committed when it runs and
        takes no write lock, so reads never queue behind writers (of any process)."""
        return self._transaction(write=False)

    def _transaction(self, write: bool) -> AbstractContextManager[Tx]:
        held = self._connection()
        self._settle(held)
        if held.sqlite:
            # A transaction SQLAlchemy began on SQLite is begun on the driver too.
            if held.driver.in_transaction:
                return _SqlAlchemyTransaction(self.engine, self.now, self._note_commit)
            return _SqliteTransaction(self, held, write)
        if held.connection.in_transaction():
            return _SqlAlchemyTransaction(self.engine, self.now)  # its own connection
        return _SqlAlchemyTransaction(held.connection, self.now)

    def close(self) -> None:
        if self._group is not None:
            self._group.commit()
        if self._checkpointer is not None:
            self._checkpointer.close()
        for connection in self._all_held:
            connection.close()
        self.engine.dispose()


class _SqlAlchemyTransaction:
    """A transaction SQLAlchemy begins and ends: on PostgreSQL, and on SQLite for one
    begun inside another (on a connection of its own, ``Engine.begin()``)."""

    def __init__(
        self,
        connectable: Engine | Connection,
        now: Callable[[], str],
        committed: Callable[[set[str] | None], None] | None = None,
    ) -> None:
        self._begin = connectable.begin()
        self._now = now
        self._committed = committed

    def __enter__(self) -> Tx:
        entered = self._begin.__enter__()
        self._connection = entered if isinstance(entered, Connection) else entered.connection
        return Tx(self._connection, self._now)

    def __exit__(self, *exc: Any) -> None:
        self._connection.info.pop(WRITTEN, None)
        self._begin.__exit__(*exc)
        if self._committed is not None:
            self._committed(None)


@dataclass(frozen=True, slots=True)
class _Held:
    """A thread's connection, with what each transaction needs of it looked up once."""

    connection: Connection
    driver: Any
    """The DB-API connection."""
    info: dict[Any, Any]
    sqlite: bool

    @classmethod
    def of(cls, connection: Connection) -> _Held:
        driver = connection.connection.driver_connection
        return cls(connection, driver, connection.info, isinstance(driver, sqlite3.Connection))


class _SqliteTransaction:
    """BEGIN and COMMIT straight on the driver: SQLAlchemy's transaction bookkeeping
    cost more than a one-row read. A write takes the lock at once (``BEGIN IMMEDIATE``);
    a read runs its statements each on its own, begun by SQLite. A statement run through
    SQLAlchemy inside makes SQLAlchemy begin too (``_sqlite_begin``): that one is ended."""

    __slots__ = ("committed", "generations", "held", "now", "serial", "write")

    def __init__(self, store: Store, held: _Held, write: bool) -> None:
        self.held, self.write = held, write
        self.now, self.serial, self.committed = store.now, store._serial, store._note_commit
        self.generations = store._generations if write else None

    def __enter__(self) -> Tx:
        self.serial.__enter__()
        held = self.held
        if self.write:
            held.driver.execute("BEGIN IMMEDIATE")
        else:
            held.info[READING] = True
        return Tx(held.connection, self.now, held.driver, held.info, self.generations)

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        held = self.held
        committed = False
        written = held.info.pop(WRITTEN, None)
        try:
            if not self.write:
                held.info.pop(READING, None)
            committed = _end(held, commit=kind is None)
        finally:
            self.serial.__exit__(None, None, None)
            if committed and written:
                self.committed(written)


def _end(held: _Held, commit: bool) -> bool:
    """End the transaction open on ``held``, whether SQLAlchemy began it (a statement run
    through it) or it was begun on the driver; returns whether it committed one."""
    if held.connection.in_transaction():
        if commit:
            held.connection.commit()
        else:
            held.connection.rollback()
    elif held.driver.in_transaction:
        if commit:
            held.driver.commit()
        else:
            held.driver.rollback()
    else:
        return False
    return commit


class _Group:
    """Write transactions on one connection, committed together (``Store.grouped``)."""

    __slots__ = ("data_version", "held", "ids", "loop", "running", "store", "waiting")

    def __init__(self, store: Store, held: _Held, loop: asyncio.AbstractEventLoop) -> None:
        held.driver.execute("BEGIN IMMEDIATE")
        self.store, self.held, self.loop = store, held, loop
        self.waiting: list[asyncio.Future[None]] = []
        """A future per transaction that waits for the commit (a task cancelled while it
        waits cancels its own, not the others')."""
        self.data_version = _data_version(held.driver)
        self.ids: dict[str, int] = {}
        """The last id its transactions took of each counter (``Tx.next_id``)."""
        self.running = False
        """Whether one of its transactions is running now."""
        loop.call_soon(self.commit)

    def commit(self) -> None:
        """Commit (once): on failure every transaction of the group fails with the error.
        Not while one of them runs (it awaited inside its block): after it."""
        if self.store._group is not self:
            return
        if self.running:
            self.loop.call_soon(self.commit)
            return
        self.store._group = None
        held = self.held
        try:
            tx = Tx(held.connection, self.store.now, held.driver, held.info)
            for name, value in self.ids.items():
                SET_COUNTER.count(tx, {"counter": name, "value": value})
            written = held.info.pop(WRITTEN, None)
            _end(held, commit=True)
        except Exception as exc:
            held.info.pop(WRITTEN, None)
            _end(held, commit=False)
            for waiter in self.waiting:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        if written:
            self.store._note_commit(written)
        for waiter in self.waiting:
            if not waiter.done():
                waiter.set_result(None)


class _Member:
    """One transaction of a group: a savepoint, then a wait for the group's commit."""

    __slots__ = ("group", "ids_before")

    def __init__(self, group: _Group) -> None:
        self.group = group
        self.ids_before: dict[str, int] = {}

    async def __aenter__(self) -> Tx:
        group = self.group
        if group.running:
            raise RuntimeError("a grouped transaction awaited inside its block")
        held = group.held
        held.driver.execute("SAVEPOINT grouped")
        group.running = True
        self.ids_before = dict(group.ids)
        store = group.store
        return Tx(held.connection, store.now, held.driver, held.info, store._generations,
                  group.data_version, group.ids)  # fmt: skip

    async def __aexit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        group = self.group
        group.running = False
        driver = group.held.driver
        if kind is not None:
            driver.execute("ROLLBACK TO grouped")
            driver.execute("RELEASE grouped")
            group.ids.clear()  # its ids are given back
            group.ids.update(self.ids_before)
            return
        driver.execute("RELEASE grouped")
        waiter = group.loop.create_future()
        group.waiting.append(waiter)
        await waiter


class _Ungrouped:
    """``Store.grouped()`` where nothing is grouped: a plain transaction."""

    __slots__ = ("transaction",)

    def __init__(self, transaction: AbstractContextManager[Tx]) -> None:
        self.transaction = transaction

    async def __aenter__(self) -> Tx:
        return self.transaction.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.transaction.__exit__(*exc)


def _one(result: CursorResult[Any]) -> Row | None:
    row = result.mappings().first()
    return dict(row) if row is not None else None


def _all(result: CursorResult[Any]) -> list[Row]:
    return [dict(row) for row in result.mappings()]


_ALIVE = or_(
    tunes.c.expires_at.is_(None), tunes.c.expires_at > bindparam("now"), tunes.c.auto_extend
)
"""Not expired (30 days after training), or kept with ``auto_extend``."""
_VISIBLE = and_(or_(tunes.c.tenant == bindparam("tenant"), tunes.c.tenant == SHARED_TENANT), _ALIVE)


def alive(tune: Mapping[str, Any], now: str) -> bool:
    """``_ALIVE`` for a tune read earlier, at the time ``now``."""
    expires_at = tune["expires_at"]
    return expires_at is None or expires_at > now or bool(tune["auto_extend"])


_PAGE: dict[str, Any] = {"limit": bindparam("limit"), "offset": bindparam("offset")}
TUNE = Prepared(select(tunes).where(tunes.c.id == bindparam("id"), _VISIBLE))
TUNE_BY_ID = Prepared(select(tunes).where(tunes.c.id == bindparam("id")))


def _newest_tunes(before: bool, *where: Any) -> Subquery:
    """Live tunes of one tenant, newest first, no more than ``window`` of them: a
    backward read of the ``(tenant, id)`` index that stops after ``window`` rows."""
    query = select(tunes).where(*where, _ALIVE)
    if before:
        query = query.where(tunes.c.id < bindparam("before_id"))
    return query.order_by(tunes.c.id.desc()).limit(bindparam("window")).subquery()


def _tune_list(before: bool) -> Prepared:
    """A page of the tenant's tunes and the gallery's, newest first.

    Under ``tenant = :tenant OR tenant = ''`` SQLite read and sorted every visible tune
    for each page. Here each tenant's share is its own index range, cut to ``window``
    (limit + offset) rows, and only those are merged: a page costs the same at any store
    size. The cuts are needed: under an ``ORDER BY``, PostgreSQL (15) sorts every row of
    a ``UNION ALL`` rather than merge its parts' ordered ranges. The gallery's share is
    left out when the tenant is the gallery itself, so no tune comes twice.
    """
    tenant = bindparam("tenant", type_=tunes.c.tenant.type)
    own = _newest_tunes(before, tunes.c.tenant == tenant)
    gallery = _newest_tunes(before, tunes.c.tenant == SHARED_TENANT, tenant != SHARED_TENANT)
    visible = union_all(select(own), select(gallery))
    page = visible.order_by(visible.selected_columns.id.desc())
    return Prepared(page.limit(_PAGE["limit"]).offset(_PAGE["offset"]))


TUNES = {before: _tune_list(before) for before in (False, True)}
PROMPT = Prepared(
    select(prompts).where(prompts.c.id == bindparam("id"), prompts.c.tenant == bindparam("tenant"))
)
PROMPT_OF_TUNE = Prepared(
    select(prompts).where(
        prompts.c.id == bindparam("id"),
        prompts.c.tenant == bindparam("tenant"),
        prompts.c.tune_id == bindparam("tune_id"),
    )
)
PROMPT_BY_ID = Prepared(select(prompts).where(prompts.c.id == bindparam("id")))
NEXT_ID = Prepared(
    update(counters)
    .where(counters.c.name == bindparam("counter"))
    .values(value=counters.c.value + 1)
    .returning(counters.c.value)
)
COUNTER = Prepared(select(counters.c.value).where(counters.c.name == bindparam("counter")))
SET_COUNTER = Prepared(
    update(counters).where(counters.c.name == bindparam("counter")).values(value=bindparam("value"))
)
INSERT_TUNE = Prepared(insert(tunes).values({c.name: bindparam(c.name) for c in tunes.c}))
INSERT_PROMPT = Prepared(insert(prompts).values({c.name: bindparam(c.name) for c in prompts.c}))


def _prompt_list(tune: bool, before: bool) -> Prepared:
    query = select(prompts).where(prompts.c.tenant == bindparam("tenant"))
    if tune:
        query = query.where(prompts.c.tune_id == bindparam("tune_id"))
    if before:
        query = query.where(prompts.c.id < bindparam("before_id"))
    query = query.order_by(prompts.c.id.desc()).limit(_PAGE["limit"]).offset(_PAGE["offset"])
    return Prepared(query)


PROMPTS = {(t, b): _prompt_list(t, b) for t in (False, True) for b in (False, True)}
_DEFAULTS: dict[str, dict[str, Any]] = {
    table.name: {c.name: c.default.arg if c.default is not None else None for c in table.c}  # type: ignore[attr-defined]
    for table in (tunes, prompts, callbacks)
}
INSERT_CALLBACK = Prepared(
    insert(callbacks).values({c.name: bindparam(c.name) for c in callbacks.c})
)
CHAIN_PENDING = Prepared(
    select(callbacks.c.id)
    .where(callbacks.c.chain == bindparam("chain"), callbacks.c.status == "pending")
    .limit(1)
)


def _unclaimed(table: Table, now: float) -> Any:
    """Nobody holds the row, or whoever held it let the lease run out."""
    return or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)


def _due_at(table: Table, column: Any) -> Any:
    """When a pending row can next be taken: its due time, or the end of a claim on it."""
    claim = table.c.claimed_until
    return case((and_(claim.is_not(None), claim > column), claim), else_=column)


class Tx:
    """One transaction: every read and write of the mock's state."""

    __slots__ = (
        "_data_version",
        "_generations",
        "_ids",
        "_now",
        "_stamp",
        "connection",
        "dialect",
        "driver",
        "info",
    )

    def __init__(
        self,
        connection: Connection,
        now: Callable[[], str],
        driver: Any = None,
        info: dict[Any, Any] | None = None,
        generations: dict[str, int] | None = None,
        data_version: int | None = None,
        ids: dict[str, int] | None = None,
    ) -> None:
        self.connection = connection
        if driver is None:
            driver = connection.connection.driver_connection
        self.driver: Any = driver
        """The DB-API connection under ``connection``: where prepared statements run."""
        self.dialect = connection.dialect
        self.info = info if info is not None else connection.info
        self._now = now
        self._stamp: str | None = None
        self._generations = generations
        """The store's, in a write transaction on SQLite (None: this one has no version)."""
        self._data_version = data_version
        self._ids = ids
        """In a group: the ids its transactions took, by counter (``next_id``)."""

    @property
    def now(self) -> str:
        """The API clock's time, read once per transaction, when first needed."""
        if self._stamp is None:
            self._stamp = self._now()
        return self._stamp

    def version(self, table: str) -> Version | None:
        """``Store.version(table)`` as this transaction began: on SQLite, in a write
        transaction (None otherwise). It holds the write lock, so nothing else commits
        before it ends: a row it reads from a table it has not written is the row of that
        version."""
        if self._generations is None:
            return None
        if self._data_version is None:
            self._data_version = _data_version(self.driver)
        return _version(self._generations, table, self._data_version)

    def wrote(self, table: str) -> None:
        """A statement that writes ``table`` is about to run (see ``WRITTEN``)."""
        self.info.setdefault(WRITTEN, set()).add(table)

    def has_written(self, table: str) -> bool:
        written = self.info.get(WRITTEN)
        return written is not None and (table in written or ANY_TABLE in written)

    # ids -----------------------------------------------------------------
    def next_id(self, name: str, skip: frozenset[int] = frozenset()) -> int:
        """The next id of a sequence every replica shares; ids in ``skip`` are never handed
        out. The counter row stays locked until the transaction ends, so ids are unique.

        In a group (``Store.grouped``), which holds the write lock from its start, ids are
        counted on from the counter as the group first read it, and the group writes each
        counter once, before it commits: an update per id cost as much as the insert."""
        if self._ids is not None:
            value = self._ids.get(name)
            if value is None:
                found = COUNTER.one(self, {"counter": name})
                assert found is not None, f"no counter {name}"
                value = int(found["value"])
            value += 1
            while value in skip:
                value += 1
            self._ids[name] = value
            return value
        while True:
            found = NEXT_ID.one(self, {"counter": name})
            assert found is not None, f"no counter {name}"
            if found["value"] not in skip:
                return int(found["value"])

    def _dialect_insert(self, table: Table) -> Any:
        """An INSERT that can say ON CONFLICT. The dialect's module is imported here, not
        at start: PostgreSQL's alone took 70 ms, on every start on SQLite."""
        module = importlib.import_module(f"sqlalchemy.dialects.{self.connection.dialect.name}")
        return module.insert(table)

    def _insert_new(self, table: Table, row: dict[str, Any]) -> bool:
        """Insert ``row``; False when its idempotency key is already taken (an earlier
        request, on any replica, created the same object)."""
        if row.get("idem_key") is None:
            statement = INSERT_TUNE if table is tunes else INSERT_PROMPT
            statement.count(self, {**_DEFAULTS[table.name], **row})
            return True
        statement = (
            self._dialect_insert(table)
            .values(**row)
            .on_conflict_do_nothing(
                index_elements=["tenant", "idem_key"], index_where=table.c.idem_key.is_not(None)
            )
        )
        return bool(self.connection.execute(statement).rowcount == 1)

    def _claim(self, table: Table, ids_query: Any, until: float, **values: Any) -> list[Row]:
        """Hold the rows ``ids_query`` picks until ``until``; returns them as claimed."""
        ids = list(self.connection.execute(ids_query).scalars())
        if not ids:
            return []
        self.connection.execute(
            update(table).where(table.c.id.in_(ids)).values(claimed_until=until, **values)
        )
        query = select(table).where(table.c.id.in_(ids)).order_by(table.c.id)
        return _all(self.connection.execute(query))

    # tunes ---------------------------------------------------------------
    def insert_tune(self, row: dict[str, Any]) -> bool:
        return self._insert_new(tunes, row)

    def ensure_tune(self, row: dict[str, Any]) -> None:
        """Insert ``row`` unless its id exists (replicas starting together both try)."""
        statement = self._dialect_insert(tunes).values(**row)
        self.connection.execute(statement.on_conflict_do_nothing(index_elements=["id"]))

    def tune(self, tenant: str, tune_id: int) -> Row | None:
        stored = self.stored_tune(tenant, tune_id)
        return stored.row() if stored is not None else None

    def stored_tune(self, tenant: str, tune_id: int) -> Stored | None:
        """``tune()`` as the driver returned it (see ``prepared.Stored``)."""
        return TUNE.stored(self, {"id": tune_id, "tenant": tenant, "now": self.now})

    def tune_by_id(self, tune_id: int) -> Row | None:
        return TUNE_BY_ID.one(self, {"id": tune_id})

    def has_own_tunes(self, tenant: str) -> bool:
        query = select(tunes.c.id).where(tunes.c.tenant == tenant).limit(1)
        return self.connection.execute(query).first() is not None

    def tune_by_key(self, tenant: str, key: str) -> Row | None:
        query = select(tunes).where(tunes.c.tenant == tenant, tunes.c.idem_key == key)
        return _one(self.connection.execute(query))

    def list_tunes(self, tenant: str, limit: int, before_id: int | None, offset: int) -> list[Row]:
        params = {"tenant": tenant, "now": self.now, "before_id": before_id}
        page = {"limit": limit, "offset": offset, "window": limit + offset}
        return TUNES[before_id is not None].rows(self, {**params, **page})

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

    def claim_due_tunes(self, now: float, lease: float, limit: int) -> list[Row]:
        """Tunes whose training time is up and that no replica holds, held for ``lease`` s."""
        ids = (
            select(tunes.c.id)
            .where(tunes.c.trained_at.is_(None), tunes.c.ready_after <= now)
            .where(_unclaimed(tunes, now))
            .order_by(tunes.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return self._claim(tunes, ids, now + lease)

    def finish_tune(self, tune_id: int, **values: Any) -> bool:
        """Mark a tune trained, unless it already is (another replica was first)."""
        query = update(tunes).where(tunes.c.id == tune_id, tunes.c.trained_at.is_(None))
        return bool(self.connection.execute(query.values(claimed_until=None, **values)).rowcount)

    # prompts -------------------------------------------------------------
    def insert_prompt(self, row: dict[str, Any]) -> bool:
        return self._insert_new(prompts, row)

    def prompt(self, tenant: str, prompt_id: int, tune_id: int | None = None) -> Row | None:
        stored = self.stored_prompt(tenant, prompt_id, tune_id)
        return stored.row() if stored is not None else None

    def stored_prompt(
        self, tenant: str, prompt_id: int, tune_id: int | None = None
    ) -> Stored | None:
        """``prompt()`` as the driver returned it (see ``prepared.Stored``)."""
        params = {"id": prompt_id, "tenant": tenant}
        if tune_id is None:
            return PROMPT.stored(self, params)
        return PROMPT_OF_TUNE.stored(self, {**params, "tune_id": tune_id})

    def prompt_by_id(self, prompt_id: int) -> Row | None:
        return PROMPT_BY_ID.one(self, {"id": prompt_id})

    def prompt_by_key(self, tenant: str, key: str) -> Row | None:
        query = select(prompts).where(prompts.c.tenant == tenant, prompts.c.idem_key == key)
        return _one(self.connection.execute(query))

    def list_prompts(
        self, tenant: str, tune_id: int | None, limit: int, before_id: int | None, offset: int
    ) -> list[Row]:
        statement = PROMPTS[(tune_id is not None, before_id is not None)]
        params = {"tenant": tenant, "tune_id": tune_id, "before_id": before_id}
        return statement.rows(self, {**params, "limit": limit, "offset": offset})

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

    def claim_due_prompts(self, now: float, lease: float, limit: int) -> list[Row]:
        """Pending prompts whose time has come, whose tune is trained and that no replica
        holds, the earliest due first (a range of ``prompts_pending``); held for ``lease``
        seconds."""
        ids = (
            select(prompts.c.id)
            .join(tunes, tunes.c.id == prompts.c.tune_id)
            .where(
                prompts.c.trained_at.is_(None),
                prompts.c.user_error.is_(None),
                prompts.c.ready_after <= now,
                tunes.c.trained_at.is_not(None),
                _unclaimed(prompts, now),
            )
            .order_by(prompts.c.ready_after, prompts.c.id)
            .limit(limit)
            .with_for_update(of=prompts, skip_locked=True)
        )
        return self._claim(prompts, ids, now + lease)

    def claim_prompt(self, prompt_id: int, now: float, lease: float) -> Row | None:
        """Hold one pending prompt (to finish it now), unless another replica holds it."""
        query = update(prompts).where(
            prompts.c.id == prompt_id,
            prompts.c.trained_at.is_(None),
            prompts.c.user_error.is_(None),
            _unclaimed(prompts, now),
        )
        if not self.connection.execute(query.values(claimed_until=now + lease)).rowcount:
            return None
        return self.prompt_by_id(prompt_id)

    def extend_claims(self, kind: str, row_ids: list[int], until: float) -> None:
        """Renew the claims on prompts or callbacks still held (a finished row holds
        none), in one statement."""
        table = {"prompts": prompts, "callbacks": callbacks}[kind]
        query = update(table).where(table.c.id.in_(row_ids), table.c.claimed_until.is_not(None))
        self.connection.execute(query.values(claimed_until=until))

    def finish_prompt(self, prompt_id: int, **values: Any) -> bool:
        """Record a prompt's outcome, unless it has one already (another replica's)."""
        query = update(prompts).where(
            prompts.c.id == prompt_id,
            prompts.c.trained_at.is_(None),
            prompts.c.user_error.is_(None),
        )
        values.update(claimed_until=None, ready_after=None)
        return bool(self.connection.execute(query.values(**values)).rowcount)

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
            self.connection.execute(update(counters).values(value=0))
        return prefixes

    # callbacks -----------------------------------------------------------
    def insert_callback(self, row: dict[str, Any]) -> None:
        INSERT_CALLBACK.count(self, {**_DEFAULTS["callbacks"], **row})

    def chain_pending(self, chain: str) -> bool:
        """Whether a callback of ``chain`` is still pending (a later one waits for it)."""
        return CHAIN_PENDING.one(self, {"chain": chain}) is not None

    def claim_due_callbacks(self, now: float, lease: float, limit: int) -> list[Row]:
        """Due callbacks that no replica holds and that no earlier pending callback of
        their chain waits before (a tune's before its prompts'), held for ``lease`` s.
        A row taken again after its holder's lease ran out counts as ``interrupted``."""
        earlier = callbacks.alias("earlier")
        waiting_behind = (
            select(earlier.c.id)
            .where(
                earlier.c.chain == callbacks.c.chain,
                earlier.c.status == "pending",
                earlier.c.id < callbacks.c.id,
            )
            .exists()
        )
        ids = (
            select(callbacks.c.id)
            .where(callbacks.c.status == "pending", callbacks.c.next_attempt_at <= now)
            .where(_unclaimed(callbacks, now), ~waiting_behind)
            .order_by(callbacks.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        taken_again = case((callbacks.c.claimed_until.is_not(None), 1), else_=0)
        return self._claim(
            callbacks, ids, now + lease, interrupted=callbacks.c.interrupted + taken_again
        )

    def next_callback_due(self, after: float) -> float | None:
        """The earliest time after ``after`` that a pending callback can be taken."""
        due_at = _due_at(callbacks, callbacks.c.next_attempt_at)
        query = select(func.min(due_at)).where(callbacks.c.status == "pending", due_at > after)
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
        """The earliest time any pending tune or prompt can be taken."""
        tune_due = self.connection.execute(
            select(func.min(_due_at(tunes, tunes.c.ready_after))).where(
                tunes.c.trained_at.is_(None)
            )
        ).scalar()
        # Prompts as two index ranges (tables.py): the first unclaimed one by due time, and
        # the claimed ones, which are due when their claim ends if that is later.
        pending = (prompts.c.trained_at.is_(None), prompts.c.user_error.is_(None))
        unclaimed_due = self.connection.execute(
            select(prompts.c.ready_after)
            .where(*pending, prompts.c.ready_after.is_not(None), prompts.c.claimed_until.is_(None))
            .order_by(prompts.c.ready_after)
            .limit(1)
        ).scalar()
        claimed_due = self.connection.execute(
            select(func.min(_due_at(prompts, prompts.c.ready_after))).where(
                prompts.c.claimed_until.is_not(None), *pending
            )
        ).scalar()
        due = (tune_due, unclaimed_due, claimed_due)
        candidates = [float(v) for v in due if v is not None]
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
