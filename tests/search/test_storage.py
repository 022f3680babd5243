"""The study's database (medclf.search.storage): calls retried while the connection is
lost, a clear error after the limit, passwords kept out of messages."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy

from medclf.search.storage import (
    DatabaseUnavailable,
    StudyDatabase,
    connection_lost,
    is_server,
    redact,
)


def _lost() -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError(
        "SELECT 1", {}, Exception("server closed the connection")
    )


@pytest.fixture
def database(tmp_path) -> StudyDatabase:
    database = StudyDatabase(f"sqlite:///{tmp_path}/optuna.db", reconnect_timeout=0.6)
    database.url = "postgresql+psycopg://medclf:secret@db.lab:5432/optuna"  # as messages show it
    return database


def test_a_call_whose_connection_was_lost_is_retried_until_it_goes_through(
    database, caplog
) -> None:
    failures = [_lost()]
    database.grace_period = 60
    assert database.judges_heartbeats()

    def call():
        if failures:
            raise failures.pop()
        return "answer"

    with caplog.at_level(logging.WARNING, logger="medclf.search"):
        assert database.retrying(call, "get_trial") == "answer"
    assert not failures
    text = caplog.text
    assert "lost the connection to the study's database" in text and "secret" not in text
    assert "reconnected to the study's database postgresql+psycopg://medclf:***@db.lab" in text
    # for a grace period after its reconnect, a worker fails nobody's trial for stale
    # heartbeats: theirs stopped with the database, not with their workers
    assert not database.judges_heartbeats()


def test_a_database_away_longer_than_the_limit_is_a_clear_error(database) -> None:
    def call():
        raise _lost()

    with pytest.raises(DatabaseUnavailable) as caught:
        database.retrying(call, "get_trial")
    message = str(caught.value)
    assert message.startswith("the study's database postgresql+psycopg://medclf:***@db.lab")
    assert "hydra.sweeper.reconnect_timeout=0.6" in message and "continue the study" in message


def test_other_errors_are_not_retried(database) -> None:
    calls = []

    def call():
        calls.append(1)
        raise ValueError("a bug, not the network")

    with pytest.raises(ValueError):
        database.retrying(call, "get_trial")
    assert calls == [1]
    assert not connection_lost(ValueError("x"))
    wrapped = RuntimeError("optuna's wrapper")
    wrapped.__cause__ = _lost()
    assert connection_lost(wrapped)


def test_urls() -> None:
    url = "postgresql+psycopg://medclf:s3cret@127.0.0.1:5432/optuna"
    assert redact(url) == "postgresql+psycopg://medclf:***@127.0.0.1:5432/optuna"
    assert is_server(url) and is_server("mysql+pymysql://u:p@h/db")
    assert not is_server("sqlite:////tmp/optuna.db") and not is_server(None)
