"""Load test: `tunesmith serve` vs a naive FastAPI + `transformers` pipeline server.

Each server runs alone (one after the other) on loopback, serving the same run's model; an
async client sends single-text requests (tweets from the run's held-out test split) from 1, 8
and 32 concurrent clients for a fixed time and reports requests/s, p50 and p99 latency and
errors. tunesmith runs with API keys on (the naive server has no auth at all) and its per-key
rate limit lifted (one client key generates all the load). `--backends torch,onnx` measures
both of tunesmith's inference backends (the ONNX export is made first when the run has none).

    python bench/serve_load.py --run runs/quickstart-...      # default: the newest quickstart run
    python bench/serve_load.py --backends torch,onnx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import tempfile
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


WRK_SCRIPT = """
bodies = {%s}
headers = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, headers, bodies[(counter %% #bodies) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%f %%f %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def load_wrk(url: str, texts: list[str], concurrency: int, seconds: float, headers: dict, workdir: Path) -> dict:
    """The same load from wrk (C, event-driven): the client takes far less of the CPU it shares."""
    bodies = [json.dumps({"inputs": t}) for t in texts if "]==]" not in t]
    all_headers = {"Content-Type": "application/json", **headers}
    script = workdir / "load.lua"
    script.write_text(WRK_SCRIPT % (",".join(f"[==[{b}]==]" for b in bodies),
                                    ",".join(f'["{k}"]="{v}"' for k, v in all_headers.items())))
    threads = min(2, concurrency)
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{int(seconds)}s", "--timeout", "30s",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    requests, micros, p50, p99, errors = line.split()[1:]
    return {"requests": int(requests), "rps": int(requests) / (int(micros) / 1e6), "p50_ms": float(p50) / 1000,
            "p99_ms": float(p99) / 1000, "errors": int(errors)}


def run_server(cmd: list[str], env: dict, ready_url: str, texts, levels, seconds, headers, predict_url,
               client: str) -> dict:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(wait_ready(ready_url))
        asyncio.run(load(predict_url, texts, 4, 3, headers))  # warm-up, not counted
        if client == "wrk":
            with tempfile.TemporaryDirectory() as tmp:
                return {c: load_wrk(predict_url, texts, c, seconds, headers, Path(tmp)) for c in levels}
        return {c: asyncio.run(load(predict_url, texts, c, seconds, headers)) for c in levels}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="run folder (default: newest runs/quickstart-*)")
    parser.add_argument("--seconds", type=float, default=15.0, help="duration of each concurrency level")
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--client", choices=["wrk", "httpx"], default="wrk" if shutil.which("wrk") else "httpx",
                        help="load generator: wrk (apt-get install wrk; default when present) or the async httpx client")
    parser.add_argument("--backends", default="torch",
                        help="tunesmith backends to measure: torch, onnx, both, or auto (a quantised run's own)")
    parser.add_argument("--serve-args", default="",
                        help="extra flags for tunesmith serve, for example '--workers 2 --threads 1'")
    parser.add_argument("--naive-run", help="run folder the naive server serves (default: --run; give the source "
                        "run when --run is a quantised copy, whose folder holds only an ONNX graph)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    run = args.run or newest_quickstart()
    levels = [int(x) for x in args.levels.split(",")]
    texts = [json.loads(line)["text"] for line in (Path(run) / "data" / "test.jsonl").read_text().splitlines()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNESMITH_API_KEYS": KEY}
    py = sys.executable

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; run {run}; {args.seconds:.0f} s per level; "
          f"client {args.client}")
    backends = args.backends.split(",")
    if "onnx" in backends and not list((Path(run) / "model").glob("*.onnx")):
        subprocess.run([py, "-m", "tunesmith", "export", run], env=env, check=True)
    results = {}
    for port, backend in enumerate(backends, start=8731):
        # The per-key rate limit is policy, not capacity: lifted here so one key can load the server.
        results[f"tunesmith-{backend}"] = run_server(
            [py, "-m", "tunesmith", "serve", run, "--port", str(port), "--backend", backend,
             "--rate-limit", "1000000", "--rate-burst", "1000000", *args.serve_args.split()],
            env, f"http://127.0.0.1:{port}/readyz", texts, levels, args.seconds, {"Authorization": f"Bearer {KEY}"}, f"http://127.0.0.1:{port}/v1/predict",
            args.client)
    results["naive"] = run_server([py, str(ROOT / "bench" / "naive_server.py"), args.naive_run or run, "8730"], env,
                                  "http://127.0.0.1:8730/healthz", texts, levels, args.seconds, {},
                                  "http://127.0.0.1:8730/v1/predict", args.client)
    print("\n| backend | clients | tunesmith req/s | naive req/s | ratio | tunesmith p50 / p99 ms "
          "| naive p50 / p99 ms | errors (t / n) |")
    print("|---|---|---|---|---|---|---|---|")
    for backend in backends:
        for c in levels:
            t, n = results[f"tunesmith-{backend}"][c], results["naive"][c]
            print(f"| {backend} | {c} | {t['rps']:.1f} | {n['rps']:.1f} | {t['rps'] / n['rps']:.2f}x "
                  f"| {t['p50_ms']:.1f} / {t['p99_ms']:.1f} | {n['p50_ms']:.1f} / {n['p99_ms']:.1f} "
                  f"| {t['errors']} / {n['errors']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
