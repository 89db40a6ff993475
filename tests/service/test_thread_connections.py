"""The decision write's own connections on PostgreSQL: one per thread, prepared once, closed with the app."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.store import db as db_module
from service.store.db import PreparedStatement, ThreadConnections


@pytest.fixture
def database(database_url: str) -> Any:
    if not database_url.startswith("postgresql"):
        pytest.skip("connections kept per thread: PostgreSQL only")
    db_module.upgrade(database_url)
    database = db_module.Database(database_url)
    yield database
    database.dispose()


def _pid_statement(database: Any) -> PreparedStatement:
    return PreparedStatement("test_backend_pid", "SELECT pg_backend_pid() FROM generate_series(1, $1::int)", ["n"])


def _backend_pid(database: Any) -> int:
    held = database.thread_connections._open
    return int(held[-1].dbapi_connection.info.backend_pid)


def test_each_thread_keeps_one_connection_and_dispose_closes_them(database: Any) -> None:
    connections: ThreadConnections = database.thread_connections
    statement = _pid_statement(database)
    assert connections.execute(statement, {"n": 3}) == 3  # rows returned
    assert connections.execute(statement, {"n": 3}) == 3
    assert len(connections._open) == 1  # the same thread's second call reuses its connection

    def other_thread() -> None:
        connections.execute(statement, {"n": 3})

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    pids = [c.dbapi_connection.info.backend_pid for c in connections._open]
    assert len(pids) == 2 and len(set(pids)) == 2
    with database.engine.connect() as admin:
        alive = admin.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                              {"pids": pids}).scalar()
        assert alive == 2
        connections.close_all()
        deadline = time.monotonic() + 10  # a backend leaves pg_stat_activity shortly after its client hangs up
        while admin.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                            {"pids": pids}).scalar() and time.monotonic() < deadline:
            admin.commit()
            time.sleep(0.05)
        left = admin.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                             {"pids": pids}).scalar()
    assert left == 0 and connections._open == []


def test_a_failing_statement_is_a_dbapi_error_and_keeps_the_connection(database: Any) -> None:
    connections: ThreadConnections = database.thread_connections
    statement = _pid_statement(database)
    connections.execute(statement, {"n": 3})
    pid = _backend_pid(database)
    failing = PreparedStatement("test_fails", "SELECT 1 / $1::int", ["n"])
    with pytest.raises(DBAPIError) as raised:
        connections.execute(failing, {"n": 0})
    assert "division by zero" in str(raised.value) and not raised.value.connection_invalidated
    connections.execute(statement, {"n": 3})
    assert _backend_pid(database) == pid and len(connections._open) == 1


def test_a_lost_connection_invalidates_the_pool_and_is_replaced(database: Any, caplog: Any) -> None:
    connections: ThreadConnections = database.thread_connections
    statement = _pid_statement(database)
    connections.execute(statement, {"n": 3})
    pid = _backend_pid(database)
    with database.engine.connect() as admin:
        admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        admin.commit()
    before = database.autocommit_engine.pool._invalidate_time
    with caplog.at_level(logging.ERROR), pytest.raises(DBAPIError) as raised:
        connections.execute(statement, {"n": 3})
    assert raised.value.connection_invalidated
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no reset tried on the lost connection
    assert database.autocommit_engine.pool._invalidate_time > before  # pooled connections are replaced too
    assert connections.execute(statement, {"n": 3}) == 3
    assert _backend_pid(database) != pid and len(connections._open) == 1
