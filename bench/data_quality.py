"""Data-quality checks (issue 22): how long they take, how well the label-error flags work,
and how many near-duplicates the shared data sets have.

    python bench/data_quality.py [--part time,labels,near] [--datasets banking77,sst2,tweets]

time:   `quality.inspect` on banking77's train.csv (~10,000 rows split 80/10/10), as
        `check` runs it: embedding every text, 3-fold probe, nearest neighbours, centroids.
labels: flip 5% and 10% of the training labels (seeded), flag suspects from out-of-fold probe
        predictions, and report precision / recall of the flags against the flipped rows, and
        the test accuracy of a linear probe trained on clean, noisy, and noisy-minus-flagged labels.
near:   validation/test texts whose nearest training text is at cosine >= 0.90 / 0.95 / 0.98,
        and the probe's test accuracy with and without the >= 0.95 ones.
Every model is MiniLM (the default text model), frozen; numbers print as markdown tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from tunesmith import models, quality
from tunesmith.config import build_config
from tunesmith.evaluate.baseline import fit_scaler
from tunesmith.quality import labels as label_checks, neighbours
from tunesmith.evaluate.features import embed_with, load_encoder
from tunesmith.tasks import TASKS

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
DATASETS = {  # name -> config values: the official test split where one exists
    "banking77": {"data": str(SHARED / "banking77" / "train.csv"), "test_data": str(SHARED / "banking77" / "test.csv"),
                  "label_col": "category"},
    "sst2": {"data": str(SHARED / "sst2" / "train.tsv"), "test_data": str(SHARED / "sst2" / "dev.tsv"),
             "val_fraction": 0.02},
    "tweets": {"data": "tweets-sentiment"},
}
LABEL_ROWS = 10_000  # training rows the label-noise runs use (a stratified sample of larger sets)


def load(name: str, **extra):
    cfg = build_config({**DATASETS[name], **extra}, "bench")
    task = TASKS[cfg.task]
    return cfg, task, task.load_data(cfg)


def features(encoder, tokenizer, splits) -> dict[str, np.ndarray]:
    return {part: embed_with(encoder, tokenizer, getattr(splits, part).texts, 128) for part in ("train", "val", "test")}


def class_ids(splits, part: str) -> np.ndarray:
    index = {label: i for i, label in enumerate(splits.labels)}
    return np.asarray([index[label] for label in getattr(splits, part).labels])


def probe_accuracy(x_train, y_train, x_test, y_test) -> float:
    from sklearn.linear_model import LogisticRegression

    scaler = fit_scaler(x_train)
    probe = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train), y_train)
    return float((probe.predict(scaler.transform(x_test)) == y_test).mean())


def time_part() -> None:
    cfg, task, splits = load("banking77", test_data=None, val_fraction=0.1, test_fraction=0.1)
    source = models.resolve(cfg.resolved_model())
    tokenizer = task.load_processor(source, cfg)
    started = time.perf_counter()
    report = quality.inspect(task, splits, source, tokenizer, cfg.resolved_max_length())
    total = time.perf_counter() - started
    print("\n| rows | embedding s | all checks s | index | suspects | near-dup val / test | outliers |")
    print("|---|---|---|---|---|---|---|")
    f = report.facts
    print(f"| {len(splits.train) + len(splits.val) + len(splits.test):,} | {f['embedding_seconds']:.1f} | {total:.1f} | "
          f"{f['near_duplicates']['index']} | {f['suspect_labels']['count']} | {f['near_duplicates']['val']} / "
          f"{f['near_duplicates']['test']} | {sum(v for k, v in f['outliers'].items() if k != 'cutoff')} |")


def labels_part(names: list[str], encoder, tokenizer) -> None:
    print("\n| data | flipped | probe agreement / kappa (out of fold) | flagged | precision | recall | probe test acc: clean | noisy "
          "| noisy, flagged dropped |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        cfg, task, splits = load(name, max_train_samples=LABEL_ROWS)
        x = features(encoder, tokenizer, splits)
        y, y_test = class_ids(splits, "train"), class_ids(splits, "test")
        clean = probe_accuracy(x["train"], y, x["test"], y_test)
        for share in (0.05, 0.10):
            rng = np.random.default_rng(0)
            flipped = rng.choice(len(y), int(share * len(y)), replace=False)
            noisy = y.copy()
            noisy[flipped] = (y[flipped] + rng.integers(1, len(splits.labels), len(flipped))) % len(splits.labels)
            probs, judged = label_checks.out_of_fold_probs(x["train"], noisy, len(splits.labels))
            flags = {s.row for s in label_checks.confident_suspects(probs, noisy, judged)}
            agreement, kappa = label_checks.agreement(probs, noisy, judged)
            truth = set(flipped.tolist())
            keep = np.asarray([i for i in range(len(y)) if i not in flags])
            print(f"| {name} ({len(y):,} train, {len(splits.labels)} classes) | {share:.0%} | {agreement:.3f} / {kappa:.3f} | "
                  f"{len(flags)} | "
                  f"{len(flags & truth) / max(1, len(flags)):.3f} | {len(flags & truth) / len(truth):.3f} | {clean:.4f} | "
                  f"{probe_accuracy(x['train'], noisy, x['test'], y_test):.4f} | "
                  f"{probe_accuracy(x['train'][keep], noisy[keep], x['test'], y_test):.4f} |")


def near_part(names: list[str], encoder, tokenizer) -> None:
    print("\n| data | train | split | rows | cos >= 0.90 | >= 0.95 | >= 0.98 | probe acc, all | without >= 0.95 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in names:
        cfg, task, splits = load(name)
        x = features(encoder, tokenizer, splits)
        y = class_ids(splits, "train")
        for part in ("val", "test"):
            sims, _ = neighbours.nearest(x["train"], x[part])
            target = class_ids(splits, part)
            kept = sims < 0.95
            print(f"| {name} | {len(y):,} | {part} | {len(sims):,} | {(sims >= 0.90).sum()} | {(sims >= 0.95).sum()} | "
                  f"{(sims >= 0.98).sum()} | {probe_accuracy(x['train'], y, x[part], target):.4f} | "
                  f"{probe_accuracy(x['train'], y, x[part][kept], target[kept]):.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="time,labels,near")
    parser.add_argument("--datasets", default="banking77,sst2,tweets")
    args = parser.parse_args()
    parts, names = args.part.split(","), args.datasets.split(",")
    if "time" in parts:
        time_part()
    if {"labels", "near"} & set(parts):
        source = models.resolve("minilm")
        encoder, tokenizer = load_encoder(source), models.load_tokenizer(source)
        if "labels" in parts:
            labels_part(names, encoder, tokenizer)
        if "near" in parts:
            near_part(names, encoder, tokenizer)


if __name__ == "__main__":
    main()
