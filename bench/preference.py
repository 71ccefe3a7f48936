"""Reward models and the preference losses on LLaMA-Factory's demo sets (issue 50), each held-out
score beside the starting model's.

    python bench/preference.py --only reward-model --out rm.json      # about 5 minutes on 2 cores
    python bench/preference.py --out preference.json                   # every run: about 1.5 hours

Each run is `tunesmith train` with the task's defaults except the settings named in RUNS, so
the commands in docs/benchmarks.md reproduce them:

- reward-model: `dpo-en-demo` (300 ranked pairs), 20% held out for test (seed 42), MiniLM,
  full, 3 passes, max length 256. Pair accuracy and margin, untuned vs tuned.
- sigmoid, ipo, hinge, robust, simpo, orpo: `dpo-en-demo`, the same split, SmolLM2-135M with
  LoRA, 1 pass over at most 120 training pairs, max length 256. Reward accuracy and margin on
  the held-out pairs, and how often the chosen answer is the more likely (`logp_accuracy`,
  comparable with the starting model's).
- kto: `kto-en-demo` (300 answers labelled good or bad), otherwise as above.

Needs `make data` (LLaMA-Factory's source distribution).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

PAIRS = {"data": "dpo-en-demo", "test_fraction": 0.2, "max_length": 256}
LOSS_RUN = {**PAIRS, "task": "preference", "method": "lora", "epochs": 1, "max_train_samples": 120, "eval_answers": 0}
RUNS = {
    "reward-model": {**PAIRS, "task": "reward-model", "epochs": 3},
    **{loss: {**LOSS_RUN, "loss": loss, **({"dpo_beta": 2.0} if loss == "simpo" else {}),
              **({"preference_noise": 0.1} if loss == "robust" else {})}
       for loss in ("sigmoid", "ipo", "hinge", "robust", "simpo", "orpo")},
    "kto": {**LOSS_RUN, "data": "kto-en-demo", "loss": "kto"},
}
SCORES = {"reward-model": ("pair_accuracy", "margin", "loss"),
          "preference": ("reward_accuracy", "reward_margin", "logp_accuracy", "loss"),
          "kto": ("reward_accuracy", "reward_margin", "kl", "loss")}


def run_one(name: str, output: Path) -> dict:
    from tunesmith.commands.train import train
    from tunesmith.config import load_config

    settings = {**RUNS[name], "output": str(output), "name": name}
    started = time.perf_counter()
    run = train(load_config(None, settings), log=lambda line: print(f"[{name}] {line}", flush=True))
    seconds = time.perf_counter() - started
    metrics = run.metrics()
    keys = SCORES["kto" if name == "kto" else settings["task"]]
    return {"name": name, "settings": RUNS[name], "seconds": seconds,
            "train_seconds": metrics["training"]["train_seconds"],
            "base": {k: metrics["baseline"].get(k) for k in keys},
            "tuned": {k: metrics["test"][k] for k in keys}, "count": metrics["test"]["count"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--out", default="preference.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(RUNS):
            results.append(run_one(name, Path(tmp)))
            Path(args.out).write_text(json.dumps(results, indent=2))
    print("\n| run | metric | base | tuned | run s (train s) |\n|---|---|---|---|---|")
    for r in results:
        for key in r["tuned"]:
            base = r["base"][key]
            print(f"| {r['name']} | {key} | {'-' if base is None else f'{base:.4f}'} | {r['tuned'][key]:.4f} | "
                  f"{r['seconds']:.0f} ({r['train_seconds']:.0f}) |")


if __name__ == "__main__":
    main()
