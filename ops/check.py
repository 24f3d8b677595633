"""`make check`: look for invariant violations in a live deployment (the database, then Temporal).

Run it as `python -m ops.check`: `make check` does, and so does `docker compose exec worker python -m ops.check`
in the production stack (the image ships `ops/`).

Reads the usual settings (DATABASE_URL, TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, RECONCILE_INTERVAL_SECONDS,
RESERVATION_RESIGNAL_SECONDS). Prints one line per violation; exits 1 if there is any, 2 if a dependency
cannot be reached, 0 otherwise.
"""

import argparse
import asyncio
import sys
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.config import Settings, get_settings
from core.db import make_engine, make_session_factory
from core.models import ReturnCase
from core.temporal import connect
from ops.invariants import Violation, check_database, find_workflow_violations


def parse_args(settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--team", action="append", help="check only this team (repeatable)")
    parser.add_argument(
        "--idle-grace",
        type=float,
        default=2 * settings.RECONCILE_INTERVAL_SECONDS + 5,
        help="seconds an eligible agent may idle while a case waits (default: two reconcile intervals + 5)",
    )
    parser.add_argument(
        "--reservation-grace",
        type=float,
        default=settings.RESERVATION_RESIGNAL_SECONDS + 2 * settings.RECONCILE_INTERVAL_SECONDS + 5,
        help="seconds a reservation may stay unconfirmed (default: re-signal delay + two reconcile intervals + 5)",
    )
    parser.add_argument("--db-only", action="store_true", help="skip the comparison with the Temporal workflows")
    parser.add_argument(
        "--open-only",
        action="store_true",
        help="compare only open cases with their workflows (faster on big databases)",
    )
    parser.add_argument("--recheck-after", type=float, default=3.0, help="seconds between looks at a suspect case")
    return parser.parse_args()


async def workflow_check(
    settings: Settings, args: argparse.Namespace, session_factory: sessionmaker[Session]
) -> list[Violation]:
    client = await connect(settings)
    return await find_workflow_violations(
        client=client,
        session_factory=session_factory,
        teams=args.team,
        include_terminal=not args.open_only,
        recheck_after=timedelta(seconds=args.recheck_after),
    )


def main() -> int:
    settings = get_settings()
    args = parse_args(settings)
    engine = make_engine(settings.DATABASE_URL, pool_size=4)
    session_factory = make_session_factory(engine)
    try:
        with session_factory() as session:
            stmt = select(ReturnCase.status, func.count()).group_by(ReturnCase.status)
            if args.team:
                stmt = stmt.where(ReturnCase.team.in_(args.team))
            counts: dict[str, int] = {row[0]: row[1] for row in session.execute(stmt)}
        violations = check_database(
            session_factory,
            idle_grace=timedelta(seconds=args.idle_grace),
            teams=args.team,
            reservation_grace=timedelta(seconds=args.reservation_grace),
        )
    except OperationalError as err:
        print(f"check: cannot read the database at {engine.url!r}: {err.orig}", file=sys.stderr)
        return 2
    scope = f"teams {', '.join(args.team)}" if args.team else "all teams"
    print(f"database ({scope}): {sum(counts.values())} cases {dict(sorted(counts.items()))}")
    if not args.db_only:
        try:
            violations += asyncio.run(workflow_check(settings, args, session_factory))
        except Exception as err:  # any failure to reach Temporal is reported the same way
            print(f"check: cannot compare with Temporal at {settings.TEMPORAL_ADDRESS}: {err}", file=sys.stderr)
            return 2
    engine.dispose()
    for violation in violations:
        print(violation)
    print(f"{len(violations)} violation(s)" + ("" if args.db_only else " (database and workflows)"))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
