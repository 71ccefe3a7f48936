"""Serving settings: one typed object, filled from flags and TUNESMITH_* environment variables."""

from __future__ import annotations

import ipaddress
import os
from typing import Literal, Optional

from pydantic import BaseModel, Field

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
LOOPBACK_HOSTS = LOOPBACK_NAMES | {"127.0.0.1", "::1", "[::1]"}


class ServeSettings(BaseModel):
    run: str = Field(description="Run folder to serve.", json_schema_extra={"positional": True})
    host: str = Field("127.0.0.1", description="Interface to listen on; anything but loopback requires API keys.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    workers: int = Field(1, ge=1, description="Worker processes (each loads the model).")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="Inference backend: auto (a quantised run's own backend, else torch), torch, or onnx "
                            "(the run's ONNX export under ONNX Runtime; `tunesmith export RUN` makes it).")
    api_keys_file: Optional[str] = Field(None, description="File with one API key per line (else TUNESMITH_API_KEYS).")
    no_auth: bool = Field(False, description="Serve without API keys (logged loudly).")
    max_body_bytes: int = Field(1_000_000, gt=0, description="Largest request body (413 above).")
    max_inputs: int = Field(64, gt=0, description="Most texts in one request (422 above).")
    max_text_chars: int = Field(10_000, gt=0, description="Longest text in characters (422 above).")
    rate_limit: float = Field(50.0, gt=0, description="Sustained requests per second per API key (429 above).")
    rate_burst: int = Field(100, gt=0, description="Requests a key may send at once before the rate limit applies.")
    batch_max_size: int = Field(32, gt=0, description="Most texts run in one micro-batch.")
    max_queue: int = Field(1024, gt=0, description="Most requests waiting for inference; more get 503 with "
                           "Retry-After (a bounded queue keeps latency and memory bounded under overload).")
    auth_failures_per_s: float = Field(1.0, gt=0, description="Failed API-key attempts allowed per second per "
                                       "client address, after a burst of 10 (429 above): slows key guessing.")
    batch_max_wait_ms: float = Field(
        2.0, ge=0, description="How long a batch waits for more requests after taking those already queued.")
    forward_batch_size: int = Field(
        8, gt=0, description="Texts per forward pass: a micro-batch runs sorted by length in slices of this size, "
                             "so short texts are not padded to the longest.")
    threads: Optional[int] = Field(
        None, gt=0, description="Torch threads for inference (default: torch's, one per core).")
    log_text: bool = Field(False, description="Log request texts, with e-mails, phones, cards and ID numbers masked.")
    allowed_hosts: Optional[list[str]] = Field(
        None, description="Host header values accepted (`*` any, `*.example.com` a domain); others get 400. "
                          "Default: loopback names when serving without keys on loopback (a web page cannot "
                          "reach the server by DNS rebinding), else any.")
    forwarded_allow_ips: Optional[list[str]] = Field(
        None, description="Proxy addresses (IPs or networks, `*` any) whose X-Forwarded-For and -Proto are "
                          "believed; default none, so a client cannot pick the address its limits count against.")
    max_image_pixels: int = Field(40_000_000, gt=0, description="Largest image in pixels, read from its header "
                                  "before decoding (422 above): a small file can decode to a huge bitmap.")
    # Generation (causal-lm and preference runs)
    max_new_tokens: int = Field(512, ge=1, description="Most tokens one answer may generate (422 above).")
    max_request_tokens: int = Field(16_384, ge=1, description="Prompt and answer tokens over all inputs of one "
                                    "request (422 above).")
    long_prompts: Literal["truncate", "error"] = Field(
        "truncate", description="A prompt that leaves no room in the model's context for its answer: keep its end "
                                "and say so in the answer (truncate), or 422 (error).")
    request_timeout_s: float = Field(120.0, gt=0, description="Seconds a generation request may run; it is then "
                                     "stopped and answered 504.")
    tokens_per_minute: int = Field(100_000, gt=0, description="Prompt and answer tokens per minute per API key "
                                   "(429 above), beside the request rate.")
    generation_batch: int = Field(16, gt=0, description="Most answers decoded together: requests join and leave "
                                  "the running batch between decoding steps.")

    def hosts(self, keyed: bool) -> list[str]:
        """The Host header values accepted: --allowed-hosts, else the default described there."""
        if self.allowed_hosts:
            return self.allowed_hosts
        if self.loopback and not keyed:
            return sorted(LOOPBACK_HOSTS | {self.host})
        return ["*"]

    @property
    def loopback(self) -> bool:
        if self.host in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def api_keys_from(settings: ServeSettings) -> list[str]:
    """Keys from --api-keys-file, else the comma-separated TUNESMITH_API_KEYS."""
    from tunesmith.errors import UserError

    if settings.api_keys_file:
        try:
            text = open(settings.api_keys_file, encoding="utf-8").read()
        except OSError as exc:
            raise UserError(f"--api-keys-file {settings.api_keys_file}: cannot read ({exc.strerror})") from None
        keys = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    else:
        keys = [k.strip() for k in os.environ.get("TUNESMITH_API_KEYS", "").split(",") if k.strip()]
    short = [k for k in keys if len(k) < 16]
    if short:
        raise UserError("API keys must be at least 16 characters (use e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    return keys

