"""Durations given as text on the command line or in a YAML file: '30m', '2h', '1h30m', '90s'."""

from __future__ import annotations

import re

from tunesmith.errors import UserError


def parse_duration(text: str | None, flag: str = "--timeout") -> float | None:
    """'30m', '2h', '90s', '1h30m' or plain seconds -> seconds; `flag` names the setting in the error."""
    if text is None:
        return None
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UserError(f"{flag} {text}: give a duration like 30m, 2h, 1h30m, 90s or 1d")
    return sum(float(n) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
