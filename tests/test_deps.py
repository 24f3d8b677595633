"""The request's database session: a connection lost after the answer went out breaks nothing."""

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from api.deps import get_session


class LostSession:
    """A session whose connection was cut while the answer was sent: its closing rollback fails."""

    def close(self) -> None:
        raise OperationalError("ROLLBACK", {}, Exception(2013, "Lost connection to MySQL server during query"))


def test_a_connection_lost_after_the_answer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    request: Any = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(session_factory=LostSession)))
    sessions = get_session(request)
    assert isinstance(next(sessions), LostSession)
    with caplog.at_level(logging.WARNING), pytest.raises(StopIteration):
        next(sessions)  # the route is done: the dependency closes its session
    assert "closing a database session failed after the answer" in caplog.text
