"""`tunesmith serve` as a real process: several workers, and graceful shutdown on SIGTERM."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import free_port, train_tiny_run
from tunesmith.cli import main

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")
KEY = "process-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("proc")
    return train_tiny_run(base, tiny_model, "freeze", "1", 20)


def start(run_path, port, *extra):
    env = {**os.environ, "TUNESMITH_API_KEYS": KEY}
    return subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(run_path), "--port", str(port), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(port, proc, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("server never became ready")


def test_several_workers_serve(run_path):
    port = free_port()
    proc = start(run_path, port, "--workers", "2")
    try:
        wait_ready(port, proc)
        for _ in range(6):
            r = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"inputs": ["good film"]}, headers=AUTH, timeout=30)
            assert r.status_code == 200 and r.json()[0]["label"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0


def test_sigterm_lets_in_flight_requests_finish(run_path):
    port = free_port()
    # A long batch wait keeps the request in flight while the signal arrives.
    proc = start(run_path, port, "--batch-max-wait-ms", "1500")
    wait_ready(port, proc)
    result = {}

    def request():
        result["response"] = httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"inputs": "good film"},
                                        headers=AUTH, timeout=30)

    thread = threading.Thread(target=request)
    thread.start()
    time.sleep(0.5)  # the request is now waiting in the micro-batcher
    proc.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    assert result["response"].status_code == 200  # finished, not dropped
    # uvicorn re-raises the signal once shutdown is complete: "ended by SIGTERM" is the status.
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.TransportError):  # and new connections are refused after exit
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
