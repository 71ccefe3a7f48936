"""What each training technique buys on real data: one change at a time against a baseline.

Setting (small data, where these techniques are meant to help): MiniLM, method full, the first
500 SST-2 training sentences (train), the next 500 (validation, picks the best checkpoint),
SST-2's dev set as the test set (872 sentences, never trained on). 4 epochs, batch 16.

- Each technique is one config key changed from the baseline (the table's first row).
- Class weights and focal loss are measured on an imbalanced variant (negatives cut to 20% of
  the training rows), where they are meant to help, against that variant's own baseline.
- Ensemble and soup combine the baseline, layer-decay and label-smoothing runs.
- Method variants (rsLoRA, DoRA, the Pfeiffer adapter layout, unfreezing the top layers) are
  measured against their plain method; bf16 and 2-process DDP against the baseline. DDP runs
  under `accelerate launch` with the cores split between the processes; its peak memory is
  the main process's.
- Continual learning: banking77, a run on 20 intents, continued on 20 other intents with no
  protection, with replay, and with EWC; forgetting = the old test accuracy lost.

    python bench/techniques.py                 # everything (about 30 min on 2 CPU cores)
    python bench/techniques.py --only baseline,label_smoothing
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from few_shot import write_rows  # (bench/ is on the path when a script here runs)

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"
BANKING = ROOT.parent / "shared" / "datasets" / "banking77"

BASE = {"method": "full", "epochs": 4, "batch_size": 16, "max_length": 64, "baseline": False}
TECHNIQUES = {  # name -> the one change from BASE
    "baseline": {},
    "layer_decay": {"layer_decay": 0.9},
    "label_smoothing": {"label_smoothing": 0.1},
    "augment_eda": {"augment_copies": 4},
    "adversarial_fgm": {"adversarial": "fgm"},
    "adversarial_pgd": {"adversarial": "pgd"},
    "gradient_checkpointing": {"gradient_checkpointing": True},
    "average_last_3": {"average_last": 3, "eval_every": 32},
    "head_lr_1e-3": {"head_lr": 1e-3},
}
# Method variants and engine settings, each against its own reference row (name -> (change, reference)).
VARIANTS = {
    "precision_bf16": ({"precision": "bf16"}, "baseline"),
    "ddp_2_processes": ({}, "baseline"),  # the baseline's config under `accelerate launch`, 2 processes
    "lora": ({"method": "lora"}, "baseline"),
    "lora_rslora": ({"method": "lora", "lora_rslora": True}, "lora"),
    "lora_dora": ({"method": "lora", "lora_dora": True}, "lora"),
    "adapter_houlsby": ({"method": "adapter"}, "baseline"),
    "adapter_pfeiffer": ({"method": "adapter", "adapter_layout": "pfeiffer"}, "adapter_houlsby"),
    "freeze": ({"method": "freeze"}, "baseline"),
    "freeze_unfreeze_top_2": ({"method": "freeze", "unfreeze_top_k": 2}, "freeze"),
}
IMBALANCED = {"imbalanced_baseline": {}, "class_weights": {"class_weights": "balanced"}, "focal_loss": {"focal_gamma": 2.0}}


def read_tsv(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        return [(r["sentence"].strip(), "positive" if r["label"] == "1" else "negative")
                for r in csv.DictReader(f, delimiter="\t")]


def run_one(name: str, data: dict, work: Path, processes: int = 1, **change) -> dict:
    """One `tunesmith train` in its own process(es), so that its peak memory is its own."""
    from tunesmith.config import TrainConfig, config_to_yaml_dict
    from tunesmith.io import write_yaml
    from tunesmith.runs import Run
    from tunesmith.train.distributed import launch_command

    cfg = TrainConfig(task="text-classification", data=data["train"], val_data=data["val"], test_data=data["test"],
                      output=str(work / "runs"), name=name, **{**BASE, **change})
    config = work / "configs" / f"{name}.yaml"
    write_yaml(config, config_to_yaml_dict(cfg))
    started = time.perf_counter()
    env = {**os.environ, **({"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))} if processes > 1 else {})}
    done = subprocess.run([*launch_command(processes), "train", str(config)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{name}: training failed: {done.stderr.strip().splitlines()[-1:]}")
    run = Run(work / "runs" / name)
    m = json.loads(run.metrics_file.read_text())
    return {"name": name, "accuracy": m["test"]["accuracy"], "macro_f1": m["test"]["macro_f1"],
            "train_s": m["training"]["train_seconds"], "run_s": time.perf_counter() - started,
            "peak_mb": m["peak_memory_mb"], "run": run, "continual": m.get("continual")}


def accuracy_of(run_path: Path, test_rows) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    predictor = Predictor.from_run(Run(run_path))
    probs = predictor.predict([t for t, _ in test_rows])
    predicted = [predictor.labels[i] for i in np.asarray(probs).argmax(1)]
    truth = [label for _, label in test_rows]
    return float(np.mean([p == t for p, t in zip(predicted, truth)])), float(f1_score(truth, predicted, average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated row names (default: all)")
    parser.add_argument("--train-rows", type=int, default=500, help="SST-2 training (and validation) rows")
    parser.add_argument("--per-intent", type=int, default=30, help="continual: banking77 training rows per intent")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        raise SystemExit(f"{SST2}: SST-2 not found; this benchmark needs ../shared/datasets/sst2")
    wanted = set(args.only.split(",")) if args.only else None
    from tunesmith.commands.ensemble import EnsembleArgs, ensemble
    from tunesmith.commands.soup import SoupArgs, soup

    rows = read_tsv(SST2 / "train.tsv")
    test = read_tsv(SST2 / "dev.tsv")
    results, n = [], args.train_rows
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = {"train": write_rows(work / "train.csv", rows[:n]), "val": write_rows(work / "val.csv", rows[n:2 * n]),
                "test": write_rows(work / "test.csv", test)}
        for name, change in TECHNIQUES.items():
            if wanted is None or name in wanted:
                results.append(run_one(name, data, work, **change))
                print(f"{name}: accuracy {results[-1]['accuracy']:.4f}", flush=True)
        for name, (change, _) in VARIANTS.items():
            if wanted is None or name in wanted:
                results.append(run_one(name, data, work, processes=2 if name.startswith("ddp") else 1, **change))
                print(f"{name}: accuracy {results[-1]['accuracy']:.4f}", flush=True)
        done = {r["name"]: r["run"].path for r in results}
        members = [done[n] for n in ("baseline", "layer_decay", "label_smoothing") if n in done]
        if len(members) == 3 and (wanted is None or "ensemble" in wanted):
            for kind, combine, args in (("ensemble_of_3", ensemble, EnsembleArgs), ("soup_of_3", soup, SoupArgs)):
                combined = combine(args(runs=[str(p) for p in members], name=kind, output=str(work / "runs")),
                                   out=lambda *_: None)
                acc, f1 = accuracy_of(combined.path, test)
                results.append({"name": kind, "accuracy": acc, "macro_f1": f1, "train_s": 0.0, "run_s": 0.0, "peak_mb": 0})
                print(f"{kind}: accuracy {acc:.4f}", flush=True)

        # Imbalanced: keep every positive of the first 1,000 rows and a quarter of the negatives.
        positives = [r for r in rows[: 2 * n] if r[1] == "positive"]
        negatives = [r for r in rows[: 2 * n] if r[1] == "negative"][: len(positives) // 4]
        skewed = positives + negatives
        np.random.default_rng(0).shuffle(skewed)
        cut = len(skewed) // 2
        skewed_data = {"train": write_rows(work / "skewed_train.csv", skewed[:cut]),
                       "val": write_rows(work / "skewed_val.csv", skewed[cut:]), "test": data["test"]}
        for name, change in IMBALANCED.items():
            if wanted is None or name in wanted:
                results.append(run_one(name, skewed_data, work, **change))
                print(f"{name}: accuracy {results[-1]['accuracy']:.4f}", flush=True)

        continual_rows = continual_bench(work, args.per_intent) if (wanted is None or "continual" in wanted) else []

    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; MiniLM, full, "
          f"SST-2 {n} train / {n} val / 872 test (dev), 4 epochs, batch 16\n")
    print("| technique | test accuracy | macro-F1 | vs its reference | train s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    reference = {r["name"]: r["accuracy"] for r in results}
    for r in results:
        against = ("imbalanced_baseline" if r["name"] in IMBALANCED else
                   VARIANTS[r["name"]][1] if r["name"] in VARIANTS else "baseline")
        base = reference.get(against)
        delta = f"{100 * (r['accuracy'] - base):+.1f} pt" if base is not None else ""
        trained = f"{r['train_s']:.0f} | {r['peak_mb']:.0f}" if r.get("run") else "n/a (no training) | n/a"
        print(f"| {r['name']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {delta} | {trained} |")
    if continual_rows:
        print("\n| continual (banking77, 20 + 20 intents) | old test accuracy before | after | forgetting | "
              "new test accuracy |")
        print("|---|---|---|---|---|")
        for r in continual_rows:
            print(f"| {r['name']} | {r['before']:.4f} | {r['after']:.4f} | {100 * r['forgetting']:.1f} pt | "
                  f"{r['new']:.4f} |")


def continual_bench(work: Path, k: int) -> list[dict]:
    """20 intents, then 20 new ones: how much of the first 20 each defence keeps."""
    if not (BANKING / "train.csv").is_file():
        print(f"{BANKING}: banking77 not found; continual learning skipped")
        return []
    by_intent, test_by_intent = defaultdict(list), defaultdict(list)
    with open(BANKING / "train.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            by_intent[r["category"]].append(r["text"])
    with open(BANKING / "test.csv", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            test_by_intent[r["category"]].append(r["text"])
    intents = sorted(by_intent)
    files = {}
    for part, chosen in (("old", intents[:20]), ("new", intents[20:40])):
        files[part] = {
            "train": write_rows(work / f"{part}_train.csv", [(t, i) for i in chosen for t in by_intent[i][:k]]),
            "val": write_rows(work / f"{part}_val.csv", [(t, i) for i in chosen for t in by_intent[i][k : k + 10]]),
            "test": write_rows(work / f"{part}_test.csv", [(t, i) for i in chosen for t in test_by_intent[i]])}
    settings = {"epochs": 5, "head_lr": 1e-3}
    old = run_one("continual_old", files["old"], work, **settings)
    rows = []
    for name, change in (("no protection", {"replay": 0.0}), ("replay 0.5", {"replay": 0.5}),
                         ("EWC 1e4", {"replay": 0.0, "ewc_lambda": 1e4}),
                         ("EWC 1e6", {"replay": 0.0, "ewc_lambda": 1e6})):
        r = run_one("continual_" + name.replace(" ", "_"), files["new"], work, from_run=str(old["run"].path),
                    **settings, **change)
        facts = r["continual"]["old_test"]
        after = _old_accuracy(r["run"], old["run"])
        rows.append({"name": name, "before": old["accuracy"], "after": after, "forgetting": old["accuracy"] - after,
                     "new": r["accuracy"]})
        print(f"continual {name}: old macro-F1 {facts['before']:.4f} -> {facts['after']:.4f}", flush=True)
    return rows


def _old_accuracy(run, old_run) -> float:
    split = old_run.split("test")
    return accuracy_of(run.path, list(zip(split.texts, split.labels)))[0]


if __name__ == "__main__":
    main()
