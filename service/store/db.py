"""Engine, per-request sessions, and the migration check."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask, g
from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.types import TypeEngine

ALEMBIC_DIR = Path(__file__).resolve().parents[2] / "alembic"


def make_engine(url: str, pool_size: int = 5, statement_timeout_ms: int | None = None,
                **engine_options: Any) -> Engine:
    """An engine tuned per backend: WAL and a busy timeout on SQLite, pre-ping and timeouts on PostgreSQL."""
    if url.startswith("sqlite"):
        # hide_parameters: values (subject ids among them) never appear in exception messages or logs.
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    # UTC sessions, so date(created_at) means the UTC day on every database.
    parsed = make_url(url)
    options = " ".join(filter(None, [parsed.query.get("options"), "-c timezone=UTC"]))  # type: ignore[list-item]
    url = parsed.difference_update_query(["options"]).render_as_string(hide_password=False)
    if statement_timeout_ms:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    connect_args: dict[str, Any] = {"connect_timeout": 5, "options": options}
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        # No ping per checkout (a round trip per request): a connection the server dropped fails
        # once, is answered 503, and SQLAlchemy then replaces the pool's connections.
        pool_pre_ping=False,
        pool_timeout=10,
        pool_recycle=1800,
        connect_args=connect_args,
        hide_parameters=True,
        **engine_options,
    )


class Database:
    """Owns the engine and the session factory of one app."""

    def __init__(self, url: str, pool_size: int = 5, statement_timeout_ms: int | None = None):
        self.url = url
        self.engine = make_engine(url, pool_size, statement_timeout_ms)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)
        self.key_listener: Any = None  # service.http.keycache.Listener, when keys are cached
        # Requests whose only write is one statement need no BEGIN/COMMIT round trips on PostgreSQL
        # (SQLite has no such mode: there the plain engine serves them, committing each statement).
        self.autocommit_engine = self.engine
        self.autocommit_sessionmaker = self.sessionmaker
        if self.engine.dialect.name == "postgresql":
            self.autocommit_engine = make_engine(url, pool_size, statement_timeout_ms, isolation_level="AUTOCOMMIT")
            self.autocommit_sessionmaker = sessionmaker(self.autocommit_engine, expire_on_commit=False)
            _share_invalidation(self.engine, self.autocommit_engine)
        self.thread_connections = (ThreadConnections(self.autocommit_engine)
                                   if self.autocommit_engine.dialect.driver == "psycopg" else None)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session outside a request (jobs, CLI): commit on success, roll back on error."""
        session = self.sessionmaker()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def driver_connection(self) -> Iterator[Any]:
        """A pooled DBAPI connection for a one-statement write on the hot path (autocommit on
        PostgreSQL, committed on leaving on SQLite). Driver errors leave as SQLAlchemy's DBAPIError,
        so a lost database is answered 503 as everywhere else."""
        engine = self.autocommit_engine
        connection = engine.raw_connection()
        dbapi = engine.dialect.loaded_dbapi
        try:
            yield connection
            connection.commit()
        except dbapi.Error as exc:
            error = _driver_error(engine, connection, exc)
            if not error.connection_invalidated:
                connection.rollback()
            raise error from exc
        finally:
            connection.close()

    def current_revision(self) -> str | None:
        with self.engine.connect() as conn:
            if not self.engine.dialect.has_table(conn, "alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def dispose(self) -> None:
        if self.key_listener is not None:
            self.key_listener.stop()
        if self.thread_connections is not None:
            self.thread_connections.close_all()
        self.engine.dispose()
        if self.autocommit_engine is not self.engine:
            self.autocommit_engine.dispose()


_SIBLINGS: weakref.WeakKeyDictionary[Engine, list[weakref.ReferenceType[Engine]]] = weakref.WeakKeyDictionary()


def _share_invalidation(*engines: Engine) -> None:
    """Engines of one database share their fate: a connection one of them loses to a restarted server
    makes the others replace their connections too, so the first request to use each pool after an
    outage is not answered 503 again (the server dropped all of them)."""
    for engine in engines:
        _SIBLINGS[engine] = [weakref.ref(other) for other in engines if other is not engine]

        @event.listens_for(engine, "handle_error")
        def _lost(context: Any, _engine: Engine = engine) -> None:
            if context.is_disconnect:
                _invalidate_siblings(_engine)


def _invalidate_siblings(engine: Engine) -> None:
    for ref in _SIBLINGS.get(engine, ()):
        sibling = ref()
        if sibling is not None:
            sibling.pool._invalidate_time = time.time()  # every connection made before now is replaced


def _driver_error(engine: Engine, pooled: Any, exc: Exception, check_in: bool = True) -> DBAPIError:
    """A driver error as SQLAlchemy would raise it; after a lost connection the pool replaces every
    connection made before it, as SQLAlchemy does on its own path (a restarted server dropped them all),
    and so do the other engines of the same database."""
    lost = engine.dialect.is_disconnect(exc, pooled.dbapi_connection, None)
    if lost:
        engine.pool._invalidate(pooled, exc, _checkin=check_in)
        _invalidate_siblings(engine)
    return DBAPIError.instance(None, None, exc, engine.dialect.loaded_dbapi.Error, connection_invalidated=lost)


@contextmanager
def session_driver(session: Session) -> Iterator[Any]:
    """The DBAPI connection under the session's, for bulk statements that skip SQLAlchemy's execution;
    driver errors leave as SQLAlchemy's DBAPIError (a lost database is answered 503, not 500)."""
    connection = session.connection()
    pooled = connection.connection
    try:
        yield pooled.driver_connection
    except connection.dialect.loaded_dbapi.Error as exc:
        error = _driver_error(connection.engine, pooled, exc)
        if error.connection_invalidated:
            connection.invalidate(exc)
        raise error from exc


class DriverStatement:
    """A statement SQLAlchemy compiles once per dialect and the hot path runs straight on a DBAPI cursor:
    the same SQL and bind processing SQLAlchemy would use, without its per-call execution machinery
    (a third of a single decision's CPU time)."""

    def __init__(self, statement: TextClause, dialect: Any, types: Mapping[str, TypeEngine[Any]]):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._order: list[str] | None = list(compiled.positiontup or []) if compiled.positional else None
        self._processors: list[tuple[str, Callable[[Any], Any]]] = [
            (name, processor) for name, kind in types.items()
            if (processor := kind.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """Bind values in the driver's parameter style, processed as SQLAlchemy would."""
        bound = dict(values)
        for name, processor in self._processors:
            bound[name] = processor(bound[name])
        return [bound[name] for name in self._order] if self._order is not None else bound

    def fetch_one(self, connection: Any, values: Mapping[str, Any]) -> Any:
        """Execute on a DBAPI connection and return the first row (None when there is none)."""
        return self._fetch(connection, values, lambda cursor: cursor.fetchone())

    def fetch_all(self, connection: Any, values: Mapping[str, Any]) -> list[Any]:
        """Execute on a DBAPI connection and return every row, as the driver gives them."""
        return self._fetch(connection, values, lambda cursor: cursor.fetchall())

    def _fetch(self, connection: Any, values: Mapping[str, Any], take: Callable[[Any], Any]) -> Any:
        cursor = connection.cursor()
        try:
            cursor.execute(self.sql, self.parameters(values))
            return take(cursor)
        finally:
            cursor.close()


class PreparedStatement:
    """A PostgreSQL statement with numbered parameters that each thread prepares once on its own
    connection (see ThreadConnections) and runs with text parameters."""

    def __init__(self, name: str, sql: str, parameters: Sequence[str], bind: DriverStatement | None = None):
        self.name = name.encode()
        self.sql = sql.encode()
        self.parameters = list(parameters)  # the value for $1, $2, ...
        self._bind = bind  # SQLAlchemy's bind processing (JSON, time zones) for these values, if any

    def values(self, row: Mapping[str, Any]) -> list[Any]:
        bound = self._bind.parameters(row) if self._bind is not None else row
        return [bound[name] for name in self.parameters]


class ThreadConnections:
    """One autocommit PostgreSQL connection per thread, kept out of the pool, for the single write on
    a decision's path. Against a pooled cursor this saves three quarters of the client's CPU per
    statement: no checkout and check-in, no cursor, no query conversion, no re-planning (statements
    are prepared once per connection), and libpq waits for the server without holding the GIL.

    They share the pool's notion of a lost server: a lost connection is answered as anywhere else
    (DBAPIError, so 503) and invalidates the pool, and every connection, pooled or kept, made before
    the pool was last invalidated is replaced before its next use."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Any] = []  # every thread's connection, so dispose() can close them

    def execute(self, statement: PreparedStatement, row: Mapping[str, Any]) -> int:
        """Run the statement for one row; returns the number of rows it returned."""
        import psycopg
        from psycopg import pq

        held = self._connection()
        connection = held.dbapi_connection  # the psycopg Connection (driver_connection is gone once detached)
        try:
            prepared = held.info.setdefault("nextbest.prepared", set())
            if statement.name not in prepared:
                _raise_on_error(connection.pgconn.prepare(statement.name, statement.sql), connection)
                prepared.add(statement.name)
            transformer = held.info.get("nextbest.transformer")
            if transformer is None:
                transformer = held.info["nextbest.transformer"] = psycopg.adapt.Transformer(connection)
            values = statement.values(row)
            params = transformer.dump_sequence(values, [psycopg.adapt.PyFormat.TEXT] * len(values))
            result = connection.pgconn.exec_prepared(statement.name, params)
            _raise_on_error(result, connection)
            return int(result.ntuples)
        except psycopg.Error as exc:
            error = _driver_error(self._engine, held, exc, check_in=False)  # ours to close, not the pool's
            if error.connection_invalidated or connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                self._discard(held)
            raise error from exc

    def close_all(self) -> None:
        with self._lock:
            held, self._open = self._open, []
        for connection in held:
            connection.dbapi_connection.close()

    def _connection(self) -> Any:
        held = getattr(self._local, "connection", None)
        if held is not None:
            if self._local.started > self._engine.pool._invalidate_time:
                return held
            self._discard(held)
        started = time.time()
        held = self._engine.raw_connection()  # connect errors are already DBAPIError
        held.detach()  # ours until it fails: the pool neither counts nor resets it
        with self._lock:
            self._open.append(held)
        self._local.connection, self._local.started = held, started
        return held

    def _discard(self, held: Any) -> None:
        with self._lock:
            if held in self._open:
                self._open.remove(held)
        self._local.connection = None
        # Closed on the driver: the fairy's own close would first roll back, on a connection that may be gone.
        held.dbapi_connection.close()


def _raise_on_error(result: Any, connection: Any) -> None:
    from psycopg import errors, pq

    if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
        raise errors.error_from_result(result, encoding=connection.info.encoding)


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def init_app(app: Flask) -> Database:
    db = Database(
        app.config["DATABASE_URL"],
        pool_size=int(app.config["NEXTBEST_DB_POOL_SIZE"]),
        statement_timeout_ms=int(app.config["NEXTBEST_DB_STATEMENT_TIMEOUT_MS"]),
    )
    app.extensions["nextbest.db"] = db

    @app.teardown_appcontext
    def _close_session(exc: BaseException | None) -> None:
        # The decision transaction first: closing it uncommitted rolls back and releases its locks.
        for name in ("decision_txn", "db_session"):
            session = g.pop(name, None)
            if session is not None:
                if exc is not None:
                    session.rollback()
                session.close()

    return db


def get_db(app: Flask | None = None) -> Database:
    from flask import current_app

    return (app or current_app).extensions["nextbest.db"]


def session() -> Session:
    """The request's session (created on first use, closed at teardown)."""
    if "db_session" not in g:
        database = get_db()
        maker = database.autocommit_sessionmaker if g.get("single_write") else database.sessionmaker
        g.db_session = maker()
    return g.db_session


# A deadlock or a serialization failure: the database rolled the transaction back, and running it
# again is the documented remedy.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
