"""Load test: `tunesmith serve` vs a naive FastAPI + `transformers` pipeline server.

Each server runs alone (one after the other) on loopback, serving the same run's model; an
async client sends single-text requests (tweets from the run's held-out test split) from 1, 8
and 32 concurrent clients for a fixed time and reports requests/s, p50 and p99 latency and
errors. tunesmith runs with API keys on (the naive server has no auth at all).

    python bench/serve_load.py --run runs/quickstart-...      # default: the newest quickstart run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789abcdef"


def newest_quickstart() -> str:
    runs = sorted((ROOT / "runs").glob("quickstart-*/metrics.json"))
    if not runs:
        sys.exit("no run given and no finished runs/quickstart-*; run `tunesmith quickstart` first or pass --run")
    return str(runs[-1].parent)


async def wait_ready(url: str, timeout: float = 120) -> None:
    async with httpx.AsyncClient() as client:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"server at {url} did not become ready")


async def load(url: str, texts: list[str], concurrency: int, seconds: float, headers: dict) -> dict:
    latencies, errors = [], 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(wid: int, client: httpx.AsyncClient) -> None:
        nonlocal errors
        i = wid
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                response = await client.post(url, json={"inputs": texts[i % len(texts)]}, headers=headers)
                if response.status_code != 200:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.perf_counter() - started)
            i += concurrency

    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(w, client) for w in range(concurrency)))
        elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "errors": errors}


def run_server(cmd: list[str], env: dict, ready_url: str, texts, levels, seconds, headers, predict_url) -> dict:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(wait_ready(ready_url))
        asyncio.run(load(predict_url, texts, 4, 3, headers))  # warm-up, not counted
        return {c: asyncio.run(load(predict_url, texts, c, seconds, headers)) for c in levels}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="run folder (default: newest runs/quickstart-*)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each concurrency level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    run = args.run or newest_quickstart()
    levels = [int(x) for x in args.levels.split(",")]
    texts = [json.loads(line)["text"] for line in (Path(run) / "data" / "test.jsonl").read_text().splitlines()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNESMITH_API_KEYS": KEY}
    py = sys.executable

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; run {run}; {args.seconds:.0f} s per level")
    results = {
        "tunesmith": run_server([py, "-m", "tunesmith", "serve", run, "--port", "8731"], env,
                                "http://127.0.0.1:8731/readyz", texts, levels, args.seconds,
                                {"Authorization": f"Bearer {KEY}"}, "http://127.0.0.1:8731/v1/predict"),
        "naive": run_server([py, str(ROOT / "bench" / "naive_server.py"), run, "8732"], env,
                            "http://127.0.0.1:8732/healthz", texts, levels, args.seconds, {},
                            "http://127.0.0.1:8732/v1/predict"),
    }
    print("\n| clients | tunesmith req/s | naive req/s | ratio | tunesmith p50 / p99 ms | naive p50 / p99 ms | errors (t / n) |")
    print("|---|---|---|---|---|---|---|")
    for c in levels:
        t, n = results["tunesmith"][c], results["naive"][c]
        print(f"| {c} | {t['rps']:.1f} | {n['rps']:.1f} | {t['rps'] / n['rps']:.2f}x | {t['p50_ms']:.1f} / {t['p99_ms']:.1f} "
              f"| {n['p50_ms']:.1f} / {n['p99_ms']:.1f} | {t['errors']} / {n['errors']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
