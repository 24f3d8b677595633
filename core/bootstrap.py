"""The first admin, and admins made by hand in production.

    python -m core.bootstrap ensure-admin               # ADMIN_EMAIL + ADMIN_PASSWORD, if no user has that email
    python -m core.bootstrap create-admin --email EMAIL # password from ADMIN_PASSWORD, else asked twice

A password never goes on the command line (it would show in `ps` and in the shell's history). The compose
`migrate` job runs `ensure-admin` after the migrations; `make dev` does the same with its own defaults.
"""

import argparse
import getpass
import sys

from sqlalchemy.orm import Session, sessionmaker

from core.config import get_settings
from core.db import make_engine, make_session_factory
from core.errors import EmailInUse
from core.security import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, hash_password
from core.users import create_admin, find_login, normalize_email


class BootstrapError(Exception):
    """Bad input for creating an admin, said in one line."""


def password_problem(password: str) -> str | None:
    """Why `password` cannot be an admin's password, or None."""
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"the password must have at least {PASSWORD_MIN_LENGTH} characters"
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"the password must have at most {PASSWORD_MAX_LENGTH} characters"
    return None


def admin_exists(session_factory: sessionmaker[Session], email: str) -> bool:
    """True when a live user signs in with `email` (admin or agent)."""
    with session_factory() as session:
        return find_login(session=session, email=email) is not None


def add_admin(session_factory: sessionmaker[Session], email: str, password: str) -> str:
    """Create an admin; returns their user id. BootstrapError for a bad email or password, or a taken email."""
    email = normalize_email(email)
    if "@" not in email or len(email) > 320:
        raise BootstrapError(f"{email!r} is not an email address")
    problem = password_problem(password)
    if problem is not None:
        raise BootstrapError(problem)
    password_hash = hash_password(password)  # outside the transaction: Argon2 takes a while
    try:
        with session_factory.begin() as session:
            return create_admin(session=session, email=email, password_hash=password_hash).id
    except EmailInUse as err:
        raise BootstrapError(err.message) from None


def ensure_admin(session_factory: sessionmaker[Session], email: str, password: str) -> bool:
    """Create the admin unless a user with this email exists; True when it was created."""
    if admin_exists(session_factory, email):
        return False
    add_admin(session_factory, email, password)
    return True


def _ask_password() -> str:
    if not sys.stdin.isatty():
        raise BootstrapError("set ADMIN_PASSWORD, or run this in a terminal to be asked for the password")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise BootstrapError("the two passwords differ")
    return first


def main(argv: list[str] | None = None) -> int:
    """The command line: `ensure-admin` or `create-admin --email EMAIL`."""
    parser = argparse.ArgumentParser(prog="python -m core.bootstrap", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("ensure-admin", help="create ADMIN_EMAIL with ADMIN_PASSWORD unless that user exists")
    create = commands.add_parser("create-admin", help="create an admin (password from ADMIN_PASSWORD, else asked)")
    create.add_argument("--email", required=True)
    args = parser.parse_args(argv)
    settings = get_settings()
    engine = make_engine(settings.DATABASE_URL, pool_size=1)
    session_factory = make_session_factory(engine)
    try:
        if args.command == "ensure-admin":
            if not (settings.ADMIN_EMAIL and settings.ADMIN_PASSWORD):
                print("ADMIN_EMAIL and ADMIN_PASSWORD are not both set: no admin created")  # noqa: T201
                return 0
            created = ensure_admin(session_factory, settings.ADMIN_EMAIL, settings.ADMIN_PASSWORD)
            print(f"admin {settings.ADMIN_EMAIL}: {'created' if created else 'exists already'}")  # noqa: T201
            return 0
        password = settings.ADMIN_PASSWORD or _ask_password()
        add_admin(session_factory, args.email, password)
        print(f"admin {normalize_email(args.email)} created")  # noqa: T201
        return 0
    except BootstrapError as err:
        print(f"error: {err}", file=sys.stderr)  # noqa: T201
        return 1
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
