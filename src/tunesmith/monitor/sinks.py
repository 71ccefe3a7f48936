"""Where alerts go: the log (one line, no user text), a JSONL file, and a webhook.

The webhook gets the alert as JSON in a POST, signed: `X-Tunesmith-Signature: sha256=<hex>`
is the HMAC-SHA256 of the body under the secret in TUNESMITH_WEBHOOK_SECRET, so the receiver
can tell the alert came from this monitor and was not altered. `X-Tunesmith-Alert-Id` lets it
drop a repeat: delivery is at least once (an alert whose delivery failed, or was cut by a
crash, is sent again later or after a restart). deliver.py decides when.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from tunesmith.errors import UserError

SECRET_ENV = "TUNESMITH_WEBHOOK_SECRET"
TIMEOUT_S = 10


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def log_line(alert: dict) -> str:
    """The alert for a log: rule, topic, window and numbers; never the texts (they stay in the
    store, the JSONL file and the webhook's body)."""
    return (f"alert {alert['id']}: {alert['rule']} on topic {alert['topic']!r}, window {when(alert['window_start'])}: "
            f"{alert['why']}")


PERMANENT = "permanent"  # the receiver refuses this alert as it is: sending it again cannot help


class Sinks:
    """The log and JSONL file (`local`), written once per alert, and the webhook (`post`),
    whose answer says whether to try again."""

    def __init__(self, log, jsonl: str | None = None, webhook: str | None = None, post=None):
        self.log, self.jsonl, self.webhook = log, Path(jsonl) if jsonl else None, webhook
        self.secret = os.environ.get(SECRET_ENV)
        if webhook and not self.secret:
            raise UserError(f"--webhook: set {SECRET_ENV} to a secret shared with the receiver; every alert is "
                            "signed with it (X-Tunesmith-Signature)")
        if webhook:
            check_webhook_url(webhook)
        self.post_body = post or _post

    def local(self, alert: dict) -> None:
        """The alert in the JSONL file (one whole line, synced) and the log."""
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a", encoding="utf-8") as f:
                f.write(json.dumps(alert, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.log(log_line(alert))

    def post(self, alert: dict) -> str | None:
        """POST the alert, signed; None when the receiver took it, else what went wrong
        (starting with PERMANENT when trying again cannot help)."""
        body = json.dumps(alert, ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json", "X-Tunesmith-Signature": signature(self.secret, body),
                   "X-Tunesmith-Alert-Id": str(alert["id"])}
        return self.post_body(self.webhook, body, headers)


def check_webhook_url(url: str) -> None:
    """https, or plain http to this machine only: alerts carry texts. Parsed, not prefix-matched
    (`http://localhost@evil.example/` names evil.example)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        host = None
    local = host in ("127.0.0.1", "localhost", "::1")
    if host is None or parts.username is not None or parts.password is not None \
            or not (parts.scheme == "https" or (parts.scheme == "http" and local)):
        raise UserError(f"--webhook {url}: use an https:// URL without user info (plain http only to this machine); "
                        "alerts carry texts")


# Answers that say "later" rather than "never": a timeout, too early, too many requests.
RETRYABLE = {408, 425, 429}


def _post(url: str, body: bytes, headers: dict) -> str | None:
    """POST; None on a 2xx answer, else what went wrong."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        permanent = 400 <= exc.code < 500 and exc.code not in RETRYABLE
        return f"{PERMANENT}: HTTP {exc.code}" if permanent else f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return type(exc).__name__ + (f": {exc.reason}" if hasattr(exc, "reason") else "")
