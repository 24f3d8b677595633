"""Direct database checks of the holding invariants, used by tests after every scenario."""

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from ops.invariants import check_database

# Tests dispatch in the same transaction as every change; the reconciler is not running in most of them.
IDLE_GRACE = timedelta(seconds=10)


def assert_holding_invariants(session_factory: sessionmaker[Session], team: str) -> None:
    """No agent holds two cases, no case two agents, both sides of every hold agree, and the rest of
    DESIGN section 3 the database can show (see ops/invariants.py)."""
    violations = check_database(session_factory, idle_grace=IDLE_GRACE, teams=[team])
    assert not violations, "invariants violated:\n" + "\n".join(str(v) for v in violations)
