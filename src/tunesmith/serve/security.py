"""API keys, rate limits, and masking of personal data in logs."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field


class KeyRing:
    """API keys kept only as SHA-256 hashes and compared in constant time.

    Every stored hash is compared (no early exit), so timing reveals neither which key
    matched nor how many characters did. With `load` (the keys file's reader), the keys are
    read again when the file changes (checked at most once a second) or on `reload()`
    (SIGHUP): rotating a key needs no restart. A file that no longer reads, or holds a bad
    key, leaves the keys as they were, and `on_error` says why.
    """

    def __init__(self, keys: list[str], load=None, watch: str | None = None, on_error=lambda message: None):
        self._hashes = _hashed(keys)
        self._load, self._watch, self._on_error = load, watch, on_error
        self._stamp = _stamp(watch)
        self._checked = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self._hashes)

    def identify(self, key: str) -> str | None:
        """A short, non-reversible id of the matching key (for logs and rate limits), or None."""
        self._reload_if_changed()
        digest = hashlib.sha256(key.encode()).digest()
        match = None
        for stored in self._hashes:
            if hmac.compare_digest(digest, stored):
                match = stored
        return match.hex()[:12] if match is not None else None

    def reload(self) -> bool:
        """Read the keys again; True when they were replaced."""
        if self._load is None:
            return False
        self._stamp = _stamp(self._watch)
        try:
            keys = self._load()
        except Exception as exc:  # UserError from the reader: the message names the file
            self._on_error(f"keys not reloaded, the previous ones stay: {exc}")
            return False
        if not keys:
            self._on_error("keys not reloaded: the file holds no key (the previous ones stay)")
            return False
        self._hashes = _hashed(keys)
        return True

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if self._watch is None or now - self._checked < 1.0:
            return
        self._checked = now
        if _stamp(self._watch) != self._stamp:
            self.reload()


def _hashed(keys: list[str]) -> list[bytes]:
    return [hashlib.sha256(k.encode()).digest() for k in keys]


def _stamp(path: str | None):
    """What changes when a file is rewritten (replaced or edited in place)."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class RateLimiter:
    """Token bucket per client: `burst` requests at once, refilled at `rate` per second. The
    table holds at most `max_clients` buckets, so a stream of new addresses cannot grow it
    without bound: idle clients (whose bucket has refilled) go first, then the oldest."""

    rate: float
    burst: int
    clock: callable = time.monotonic
    max_clients: int = 10_000
    _buckets: dict = field(default_factory=dict)

    def check(self, client: str, cost: float = 1.0) -> float:
        """0 if the request (costing `cost` tokens of the bucket; at most `burst`) may go ahead,
        else the seconds until it may (Retry-After)."""
        now = self.clock()
        if client not in self._buckets and len(self._buckets) >= self.max_clients:
            self._evict(now)
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._buckets[client] = (tokens - cost, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (cost - tokens) / self.rate

    def _evict(self, now: float) -> None:
        full = [c for c, (tokens, last) in self._buckets.items() if tokens + (now - last) * self.rate >= self.burst]
        for client in full:  # forgetting a full bucket changes nothing: a new one starts full
            del self._buckets[client]
        while len(self._buckets) >= self.max_clients:
            del self._buckets[next(iter(self._buckets))]  # the oldest entry


# --- masking of personal data, for the opt-in text logging ---------------------------

# Every pattern is bounded (a local part is at most 64 characters, a domain label 63), so a
# search costs a fixed number of steps per character: an unbounded `[\w.+-]+@` tried at every
# start of one long word is quadratic in its length.
EMAIL = re.compile(r"[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
SSN = re.compile(r"\b\d{3}-\d{2}-\d{4}\b")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")
PHONE = re.compile(r"(?<![\w])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?![\w])")


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _mask_card(match: re.Match) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if _luhn_ok(digits) else match.group()


def mask_pii(text: str) -> str:
    """Mask e-mail addresses, card numbers (Luhn-valid), ID numbers (US SSN, IBAN) and phones."""
    text = EMAIL.sub("[EMAIL]", text)
    text = CARD.sub(_mask_card, text)
    text = SSN.sub("[ID]", text)
    text = IBAN.sub("[ID]", text)
    text = PHONE.sub(lambda m: "[PHONE]" if sum(c.isdigit() for c in m.group()) >= 7 else m.group(), text)
    return text
