"""Summarization and translation with the offline default (SmolLM2-135M-Instruct, LoRA), base
model vs tuned, on the built-in sets (issue 49).

    python bench/text2text.py --out text2text.json                # about 40 minutes on 2 cores
    python bench/text2text.py --only zh-en --out zh-en.json       # one of zh-en, en-zh, aclsum

Each run is `tunesmith train` with the task's defaults except the sizes named below, so the
commands in docs/benchmarks.md reproduce them:

- zh-en / en-zh: `tatoeba-zh-en`, split by source (seed 42), 1,000 training pairs
  (`--max-train-samples`) and 300 validation and test pairs (`--max-eval-samples`), 1 pass of
  32-row steps (`--grad-accum 16`, as measured before the default became 8 rows), max length 128, the first 100 test sources generated (greedy, 48 new tokens). chrF and BLEU.
- aclsum: the ACLSum abstracts -> aspect summaries, its own 100/50/100 splits, the task's 3
  passes, max length 512, 100 test papers generated (128 new tokens). ROUGE-1/2/L.

The base model's scores are the baseline the run computes on the same test sources.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

RUNS = {
    "zh-en": {"task": "translation", "data": "tatoeba-zh-en", "source_lang": "zh", "target_lang": "en",
              "max_train_samples": 1000, "max_eval_samples": 300, "epochs": 1, "max_new_tokens": 48, "max_length": 128,
              "grad_accum": 16},
    "en-zh": {"task": "translation", "data": "tatoeba-zh-en", "source_lang": "en", "target_lang": "zh",
              "max_train_samples": 1000, "max_eval_samples": 300, "epochs": 1, "max_new_tokens": 48, "max_length": 128,
              "grad_accum": 16},
    "aclsum": {"task": "summarization", "data": "aclsum", "max_new_tokens": 128, "max_length": 512},
}
SCORES = {"translation": ("chrf", "bleu", "length_ratio"), "summarization": ("rouge_1", "rouge_2", "rouge_l", "length_ratio")}


def run_one(name: str, output: Path) -> dict:
    from tunesmith.commands.train import train
    from tunesmith.config import load_config

    settings = {**RUNS[name], "output": str(output), "name": name}
    started = time.perf_counter()
    run = train(load_config(None, settings), log=lambda line: print(f"[{name}] {line}", flush=True))
    seconds = time.perf_counter() - started
    metrics = run.metrics()
    keys = SCORES[settings["task"]]
    return {"name": name, "settings": RUNS[name], "seconds": seconds,
            "train_seconds": metrics["training"]["train_seconds"],
            "base": {k: metrics["baseline"][k] for k in keys + ("loss",)},
            "tuned": {k: metrics["test"][k] for k in keys + ("loss",)},
            "answered": metrics["test"]["answered"], "samples": metrics["test"].get("samples", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(RUNS), action="append")
    parser.add_argument("--out", default="text2text.json")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or list(RUNS):
            results.append(run_one(name, Path(tmp)))
            Path(args.out).write_text(json.dumps(results, indent=2, ensure_ascii=False))
    print("\n| run | metric | base | tuned | run s (train s) |\n|---|---|---|---|---|")
    for r in results:
        for key in r["base"]:
            print(f"| {r['name']} | {key} | {r['base'][key]:.4f} | {r['tuned'][key]:.4f} | "
                  f"{r['seconds']:.0f} ({r['train_seconds']:.0f}) |")


if __name__ == "__main__":
    main()
