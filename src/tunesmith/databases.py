"""Database URLs as the monitor's store and tune's study storage take them: which kind a URL
names, and how logs and error messages show it (never with its password)."""

from __future__ import annotations

import re
from pathlib import Path


def is_postgres_url(where: str | Path) -> bool:
    return str(where).startswith(("postgresql://", "postgres://", "postgresql+"))


def redacted(text: str | Path) -> str:
    """`text` with any URL's password replaced by ***: user:secret@host -> user:***@host."""
    return re.sub(r"(://[^:/@\s]+:)[^\s/]*@", r"\1***@", str(text))
