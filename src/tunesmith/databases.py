"""Database URLs as the monitor's store and tune's study storage take them: which kind a URL
names, a PostgreSQL connection from one, and how logs and error messages show it (never with
its password)."""

from __future__ import annotations

import re
from pathlib import Path

from tunesmith.errors import UserError


def is_postgres_url(where: str | Path) -> bool:
    return str(where).startswith(("postgresql://", "postgres://", "postgresql+"))


SECRET_PARAMS = r"password|passwd|pwd|secret|token|api_key|apikey|key|sslpassword"


def redacted(text: str | Path) -> str:
    """`text` with any URL's password replaced by ***: user:secret@host -> user:***@host (an
    empty user too: ://:secret@host), and secret query values: ?password=secret -> ?password=***."""
    text = re.sub(r"(://[^:/@\s]*:)[^\s/@]*@", r"\1***@", str(text))
    return re.sub(rf"([?&;](?:{SECRET_PARAMS})=)[^&;\s#]*", r"\1***", text, flags=re.IGNORECASE)


def postgres_driver(url: str, flag: str):
    """psycopg (3), or one line saying how to install it."""
    try:
        import psycopg
    except ImportError:
        raise UserError(f"{flag} {redacted(url)}: PostgreSQL needs the psycopg driver: "
                        "pip install 'tunesmith[postgres]'") from None
    return psycopg


def connect_postgres(url: str, flag: str):
    """A psycopg connection in autocommit mode (callers open their own transactions) to a
    postgresql:// URL, SQLAlchemy's +driver part ignored; a server that cannot be reached is one
    line naming `flag`, without the password."""
    psycopg = postgres_driver(url, flag)
    _, sep, rest = url.partition("://")
    try:
        return psycopg.connect(f"postgresql{sep}{rest}", autocommit=True)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{flag} {redacted(url)}: cannot connect ({redacted(reason)}); check the host, database "
                        "and credentials in the URL") from None
