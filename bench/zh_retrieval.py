"""Chinese retrieval with sentence embeddings (issue 48): does fine-tuning help, and do E5's
prompts matter?

    make data                                   # the llamafactory source distribution
    python bench/zh_retrieval.py --out zh_retrieval.json

The data: LLaMA-Factory's `alpaca_zh_demo.json` (1,000 Chinese instructions with answers,
Apache-2.0, in the llamafactory 0.9.5 source distribution): each instruction (with its input)
is a query and its answer the passage to find. `tunesmith train --task sentence-embedding`
splits by query (80/10/10, seed 0) and scores each test query's answer among the test split's
answers: NDCG@10, MRR@10, recall@1 and recall@10, for the untuned model and the tuned one.

Three runs, each the task's defaults but 2 passes and queries and answers cut at 128 tokens (the
defaults read the long answers whole and take 17 minutes a run on 2 cores): multilingual-e5-small with E5's "query: "/"passage: "
prompts (what tunesmith does for that family), the same without prompts (the plain Hugging
Face way of feeding texts), and MiniLM (the English default).
"""

from __future__ import annotations

import argparse
import json
import tarfile
import tempfile
import time
from pathlib import Path
from unittest import mock

SDIST = Path(".venv/share/tunesmith/sdists/llamafactory-0.9.5.tar.gz")
MEMBER = "llamafactory-0.9.5/data/alpaca_zh_demo.json"
EPOCHS, MAX_LENGTH = 2, 128
METRICS = ("ndcg_at_10", "mrr_at_10", "recall_at_1", "recall_at_10")


def write_pairs(path: Path) -> int:
    if not SDIST.is_file():
        raise SystemExit(f"{SDIST}: missing; run `make data` first")
    with tarfile.open(SDIST) as archive:
        rows = json.load(archive.extractfile(MEMBER))
    seen, pairs = set(), []
    for row in rows:
        answer = row["output"].strip()
        if answer in seen:  # a repeated answer would be a positive of two queries
            continue
        seen.add(answer)
        query = (row["instruction"] + ("\n" + row["input"] if row["input"].strip() else "")).strip()
        pairs.append({"query": query, "passage": answer})
    path.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs), encoding="utf-8")
    return len(pairs)


def train_once(data: Path, output: Path, name: str, model: str, prompts: bool) -> dict:
    from tunesmith.commands.train import train
    from tunesmith.config import load_config

    cfg = load_config(None, {"task": "sentence-embedding", "data": str(data), "model": model, "output": str(output),
                             "name": name, "epochs": EPOCHS, "max_length": MAX_LENGTH})
    started = time.perf_counter()
    if prompts:
        run = train(cfg, log=lambda line: None)
    else:
        with mock.patch("tunesmith.tasks.sentence_embedding.model_prompts", lambda *args: {}):
            run = train(cfg, log=lambda line: None)
    metrics = run.metrics()
    return {"name": name, "model": model, "prompts": prompts, "seconds": time.perf_counter() - started,
            "untuned": {m: metrics["baseline"][m] for m in METRICS}, "tuned": {m: metrics["test"][m] for m in METRICS},
            "test_queries": metrics["test"]["count"], "corpus": metrics["test"]["corpus"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="zh_retrieval.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "alpaca_zh_pairs.jsonl"
        count = write_pairs(data)
        results = [train_once(data, Path(tmp), name, model, prompts) for name, model, prompts in (
            ("e5-small, prompts", "e5-small", True), ("e5-small, no prompts", "e5-small", False),
            ("minilm", "minilm", True))]
    print(f"\n{count} pairs; test split: {results[0]['test_queries']} queries, {results[0]['corpus']} passages\n")
    print("| model | untuned NDCG@10 | tuned NDCG@10 | tuned MRR@10 | tuned recall@1 | tuned recall@10 | run s |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['untuned']['ndcg_at_10']:.4f} | {r['tuned']['ndcg_at_10']:.4f} | "
              f"{r['tuned']['mrr_at_10']:.4f} | {r['tuned']['recall_at_1']:.4f} | {r['tuned']['recall_at_10']:.4f} | "
              f"{r['seconds']:.0f} |")
    Path(args.out).write_text(json.dumps({"pairs": count, "results": results}, indent=2))


if __name__ == "__main__":
    main()
