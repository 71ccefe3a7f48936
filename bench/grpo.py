"""GRPO on the built-in arithmetic word problems (issue 50): held-out accuracy of SmolLM2-135M
before and after, the time it took, and peak memory.

    python bench/grpo.py --out grpo.json                          # the task's defaults
    python bench/grpo.py --max-train-samples 160 --out grpo.json  # a shorter run

The run is `tunesmith train arithmetic --task rl` with the task's defaults (LoRA, reward
`number`, groups of 4, 4 prompts a step, one pass, 64 new tokens) and the flags given here, so
the command printed at the end reproduces it. Accuracy is the share of the 100 generated test
problems whose final number is right, greedy, base model vs tuned, computed in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--reward", default=None, help="as tunesmith's --reward (default: the task's)")
    parser.add_argument("--out", default="grpo.json")
    args = parser.parse_args()
    from tunesmith.commands.train import train
    from tunesmith.config import load_config

    settings = {"task": "rl", "data": "arithmetic", "name": "grpo"}
    if args.max_train_samples:
        settings["max_train_samples"] = args.max_train_samples
    if args.reward:
        settings["reward"] = args.reward
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        run = train(load_config(None, {**settings, "output": tmp}), log=lambda line: print(line, flush=True))
        seconds = time.perf_counter() - started
        metrics = run.metrics()
        history = run.history()
    steps = [h for h in history if "completion_tokens" in h]
    keys = ("accuracy", "reward", "answer_tokens")
    result = {"settings": settings, "seconds": seconds, "train_seconds": metrics["training"]["train_seconds"],
              "steps": metrics["training"]["steps"], "peak_memory_mb": metrics["peak_memory_mb"],
              "base": {k: metrics["baseline"][k] for k in keys}, "tuned": {k: metrics["test"][k] for k in keys},
              "training_reward": [round(h["reward"], 3) for h in steps], "kl": [round(h["kl"], 4) for h in steps],
              "samples": metrics["test"].get("samples", [])}
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k not in ("task", "data", "name"))
    print(f"\ntunesmith train arithmetic --task rl {flags}".rstrip())
    print("| metric | base | tuned |\n|---|---|---|")
    for key in keys:
        print(f"| {key} | {result['base'][key]:.3f} | {result['tuned'][key]:.3f} |")
    print(f"{result['steps']} steps, {seconds:.0f} s ({result['train_seconds']:.0f} s training), "
          f"peak memory {result['peak_memory_mb']:.0f} MB")


if __name__ == "__main__":
    main()
