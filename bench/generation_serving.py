"""Generation serving: continuous batching against one answer at a time, same server, same run.

`tunesmith serve` runs twice on loopback, one after the other: with `--generation-batch 16`
(requests join and leave the decoding batch between steps) and with `--generation-batch 1`
(one answer at a time: the way a server that calls `model.generate` per request behaves).
OpenAI-style clients (`POST /v1/completions`, greedy, `max_tokens` fixed) ask instruction
prompts from 1, 4 and 16 concurrent clients for a fixed time each; the table gives generated
tokens/s (from each answer's `usage`), p50 latency per answer, errors, and the ratio of the
two servers at each concurrency.

    python bench/generation_serving.py                 # trains a 1-step SmolLM2 LoRA run first
    python bench/generation_serving.py --run runs/my-sft-run --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from serve_load import wait_ready  # (bench/ is on the path when a script here runs)

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "datasets" / "alpaca_subset" / "alpaca_5000.json"
KEY = "bench-key-0123456789abcdef"


def make_run(folder: Path) -> Path:
    """A SmolLM2 run with one LoRA step: the benchmark measures serving, not training."""
    rows = json.loads(ALPACA.read_text())[:64]
    data = folder / "sft.jsonl"
    data.write_text("".join(json.dumps({"instruction": r["instruction"], "input": r.get("input", ""),
                                        "output": r["output"]}) + "\n" for r in rows))
    subprocess.run([sys.executable, "-m", "tunesmith", "train", "--task", "causal-lm", "--data", str(data),
                    "--model", "smollm2", "--method", "lora", "--max-steps", "1", "--no-baseline",
                    "--eval-answers", "0", "--output", str(folder), "--name", "sft"], check=True)
    return folder / "sft"


def prompts(n: int = 64) -> list[str]:
    rows = json.loads(ALPACA.read_text())[-n:]
    return [r["instruction"] + ("\n" + r["input"] if r.get("input") else "") for r in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load(url: str, model: str, texts: list[str], clients: int, seconds: float, max_tokens: int) -> dict:
    tokens, latencies, errors = 0, [], 0
    stop = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {KEY}"}

    async def client_loop(cid: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        i = cid
        while time.perf_counter() < stop:
            body = {"model": model, "prompt": texts[i % len(texts)], "max_tokens": max_tokens, "temperature": 0}
            start = time.perf_counter()
            try:
                answer = await http.post(url, json=body, headers=headers, timeout=600)
                if answer.status_code == 200:
                    tokens += answer.json()["usage"]["completion_tokens"]
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
            except httpx.TransportError:
                errors += 1
            i += clients

    began = time.perf_counter()
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client_loop(c, http) for c in range(clients)))
    elapsed = time.perf_counter() - began  # includes the answers still running at `stop`
    return {"tokens_s": tokens / elapsed, "answers": len(latencies), "errors": errors,
            "p50_s": float(np.percentile(latencies, 50)) if latencies else float("nan")}


def measure(run: Path, batch: int, concurrency: list[int], seconds: float, max_tokens: int) -> dict:
    port = free_port()
    env = {**os.environ, "TUNESMITH_API_KEYS": KEY}
    server = subprocess.Popen([sys.executable, "-m", "tunesmith", "serve", str(run), "--port", str(port),
                               "--generation-batch", str(batch), "--rate-limit", "100000",
                               "--tokens-per-minute", "100000000"], env=env)
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{port}/readyz", timeout=300))  # SmolLM2 loads slowly
        url = f"http://127.0.0.1:{port}/v1/completions"
        texts = prompts()
        asyncio.run(load(url, run.name, texts, 1, 5, max_tokens))  # warm-up
        return {c: asyncio.run(load(url, run.name, texts, c, seconds, max_tokens)) for c in concurrency}
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a causal-lm or preference run (default: train a 1-step SmolLM2 LoRA run)")
    parser.add_argument("--seconds", type=float, default=30.0, help="load time per concurrency (default 30)")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens per answer (default 64)")
    parser.add_argument("--concurrency", default="1,4,16")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else make_run(Path(tmp))
        batched = measure(run, 16, concurrency, args.seconds, args.max_tokens)
        single = measure(run, 1, concurrency, args.seconds, args.max_tokens)
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} cores; run {run.name}; "
          f"max_tokens {args.max_tokens}, greedy, {args.seconds:g} s per row")
    print("| clients | one at a time tok/s | p50 s | continuous batching tok/s | p50 s | errors | ratio |")
    print("|---|---|---|---|---|---|---|")
    for c in concurrency:
        one, many = single[c], batched[c]
        print(f"| {c} | {one['tokens_s']:.1f} | {one['p50_s']:.2f} | {many['tokens_s']:.1f} | {many['p50_s']:.2f} | "
              f"{one['errors'] + many['errors']} | {many['tokens_s'] / one['tokens_s']:.2f}x |")


if __name__ == "__main__":
    main()
