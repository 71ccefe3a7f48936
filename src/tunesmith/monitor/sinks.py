"""Where alerts go: the log (one line, no user text), a JSONL file, and a webhook.

The webhook gets the alert as JSON in a POST, signed: `X-Tunesmith-Signature: sha256=<hex>`
is the HMAC-SHA256 of the body under the secret in TUNESMITH_WEBHOOK_SECRET, so the receiver
can tell the alert came from this monitor and was not altered. `X-Tunesmith-Alert-Id` lets it
drop a repeat: delivery is at least once (an alert whose delivery failed, or was cut by a
crash, is sent again on the next pass or restart). Failed posts are retried with backoff.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from tunesmith.errors import UserError

SECRET_ENV = "TUNESMITH_WEBHOOK_SECRET"
RETRIES = 3  # attempts per pass; a still-failing alert waits for the next pass
BACKOFF_S = 0.5  # doubled after each failed attempt
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


class Sinks:
    def __init__(self, log, jsonl: str | None = None, webhook: str | None = None, sleep=time.sleep, post=None):
        self.log, self.jsonl, self.webhook, self.sleep = log, Path(jsonl) if jsonl else None, webhook, sleep
        self.secret = os.environ.get(SECRET_ENV)
        if webhook and not self.secret:
            raise UserError(f"--webhook: set {SECRET_ENV} to a secret shared with the receiver; every alert is "
                            "signed with it (X-Tunesmith-Signature)")
        if webhook and not webhook.startswith(("https://", "http://127.0.0.1", "http://localhost", "http://[::1]")):
            raise UserError(f"--webhook {webhook}: use https:// (plain http only to this machine); alerts carry texts")
        self.post = post or _post

    def deliver(self, alert: dict) -> bool:
        """Send one stored alert everywhere; False if the webhook could not take it (then nothing
        else is written either, and the next pass sends it again)."""
        if self.webhook:
            body = json.dumps(alert, ensure_ascii=False).encode("utf-8")
            headers = {"Content-Type": "application/json", "X-Tunesmith-Signature": signature(self.secret, body),
                       "X-Tunesmith-Alert-Id": str(alert["id"])}
            wait = BACKOFF_S
            for attempt in range(1, RETRIES + 1):
                error = self.post(self.webhook, body, headers)
                if error is None:
                    break
                self.log(f"webhook: alert {alert['id']} attempt {attempt} of {RETRIES} failed ({error})")
                if attempt == RETRIES:
                    return False
                self.sleep(wait)
                wait *= 2
        if self.jsonl is not None:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a", encoding="utf-8") as f:  # one whole line per write
                f.write(json.dumps(alert, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
        self.log(log_line(alert))
        return True


def _post(url: str, body: bytes, headers: dict) -> str | None:
    """POST; None on a 2xx answer, else what went wrong."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return None if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return type(exc).__name__ + (f": {exc.reason}" if hasattr(exc, "reason") else "")
