"""Label-error detectors on planted noise (issue 46): which finds flipped labels, and does
dropping what it flags win back the accuracy the noise cost?

    python bench/label_errors.py [--datasets sst2,tweets,banking77] [--noise 0.05,0.1,0.2] [--rows 2000]

For each data set a stratified sample of training rows has a share of its labels moved to
another class at random (seeded); validation (500 rows) and test (the official split where
there is one) stay clean. Detectors, each scored by the precision and recall of its flags
against the moved rows:

  probe      out-of-fold frozen-feature probe + confident learning (`check`'s default)
  aum        training dynamics of one default `train` run: area under the margin < 0
  dyn-cl     the same run's epoch-averaged probabilities + confident learning
  probe&aum  rows both flag: the probe `train` runs before it starts, and the run's dynamics
  deep       3-fold out-of-fold probabilities of fine-tuned runs (`check --deep`) + confident learning
  *+cleanlab cleanlab's `find_label_issues` on the same probabilities as the row above it

At the noise levels in --retrain, the test accuracy of a default run trained on the clean
labels, the noisy ones, and the noisy ones less each detector's flags. Results are cached in
--cache (JSON, one entry per data set, noise and detector), so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tunesmith import models
from tunesmith.commands import deep_labels
from tunesmith.commands.train import train
from tunesmith.config import build_config
from tunesmith.data.labeled import write_split
from tunesmith.evaluate.features import embed_with, load_encoder
from tunesmith.quality import labels as label_checks
from tunesmith.quality.dynamics import Dynamics
from tunesmith.tasks import TASKS

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
DATASETS = {  # name -> config values: the official test split where one exists
    "sst2": {"data": str(SHARED / "sst2" / "train.tsv"), "test_data": str(SHARED / "sst2" / "dev.tsv")},
    "tweets": {"data": "tweets-sentiment"},
    "banking77": {"data": str(SHARED / "banking77" / "train.csv"), "test_data": str(SHARED / "banking77" / "test.csv"),
                  "label_col": "category"},
}
VAL_ROWS = 500


def sample(name: str, rows: int, seed: int = 0):
    """(splits with `rows` training rows and VAL_ROWS validation rows, clean class ids)."""
    from sklearn.model_selection import train_test_split

    cfg = build_config(DATASETS[name], "bench")
    splits = TASKS[cfg.task].load_data(cfg)
    index = {label: i for i, label in enumerate(splits.labels)}
    y = np.asarray([index[label] for label in splits.train.labels])
    keep, _ = train_test_split(np.arange(len(y)), train_size=rows, stratify=y, random_state=seed)
    splits.train = splits.train.subset(sorted(keep.tolist()))
    val_keep = np.random.default_rng(seed).permutation(len(splits.val))[:VAL_ROWS]
    splits.val = splits.val.subset(sorted(val_keep.tolist()))
    return splits, np.asarray([index[label] for label in splits.train.labels])


def plant(y: np.ndarray, share: float, n_classes: int, seed: int = 0) -> tuple[np.ndarray, set[int]]:
    rng = np.random.default_rng(seed)
    moved = rng.choice(len(y), int(round(share * len(y))), replace=False)
    noisy = y.copy()
    noisy[moved] = (y[moved] + rng.integers(1, n_classes, len(moved))) % n_classes
    return noisy, set(moved.tolist())


def with_labels(part, ids: np.ndarray, names: list[str]):
    from tunesmith.data.labeled import Examples

    return Examples(list(part.texts), [names[i] for i in ids], part.source, list(part.where))


def run_on(folder: Path, splits, train_part, tag: str, extra: dict | None = None):
    """A default `train` run on `train_part` (val and test as in `splits`); (run, seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train_part), ("val", splits.val), ("test", splits.test)):
        write_split(folder / f"{tag}-{name}.jsonl", part)
    cfg = build_config({"data": str(folder / f"{tag}-train.jsonl"), "val_data": str(folder / f"{tag}-val.jsonl"),
                        "test_data": str(folder / f"{tag}-test.jsonl"), "text_col": "text", "label_col": "label",
                        "output": str(folder / "runs"), "name": tag, "quality_checks": False, "baseline": False,
                        **(extra or {})}, "bench")
    started = time.perf_counter()
    run = train(cfg, log=lambda _: None)
    return run, time.perf_counter() - started


def score(flags: set[int], truth: set[int]) -> dict:
    hit = len(flags & truth)
    precision, recall = hit / max(1, len(flags)), hit / max(1, len(truth))
    return {"flagged": len(flags), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / max(1e-9, precision + recall)}


def cleanlab_flags(probs: np.ndarray, noisy: np.ndarray, judged: np.ndarray) -> set[int]:
    from cleanlab.filter import find_label_issues

    rows = np.flatnonzero(judged)
    found = find_label_issues(noisy[rows], probs[rows] / probs[rows].sum(1, keepdims=True))
    return set(rows[found].tolist())


def cl_flags(probs, noisy, judged=None) -> set[int]:
    return {s.row for s in label_checks.confident_suspects(probs, noisy, judged)}


def detectors(name: str, share: float, rows: int, folder: Path, cache: dict, encoder_parts, deep: bool) -> None:
    key = f"{name}/{share:g}"
    if key in cache:
        return
    splits, y = sample(name, rows)
    noisy, truth = plant(y, share, len(splits.labels))
    noisy_train = with_labels(splits.train, noisy, splits.labels)
    found = {"rows": len(y), "classes": len(splits.labels), "moved": len(truth)}
    encoder, tokenizer = encoder_parts
    x = embed_with(encoder, tokenizer, splits.train.texts, 128)
    started = time.perf_counter()
    probs, judged = label_checks.out_of_fold_probs(x, noisy, len(splits.labels))
    found["probe_seconds"] = time.perf_counter() - started
    found["probe_kappa"] = label_checks.agreement(probs, noisy, judged)[1]
    found["probe"] = score(cl_flags(probs, noisy, judged), truth)
    found["probe+cleanlab"] = score(cleanlab_flags(probs, noisy, judged), truth)
    run, seconds = run_on(folder / key, splits, noisy_train, "noisy")
    found["train_seconds"], found["noisy_test_accuracy"] = seconds, json.loads(run.metrics_file.read_text())["test"]["accuracy"]
    dynamics = Dynamics.read(run.path / "quality")
    keep = Path(cache["_keep"]) / key.replace("/", "-")  # what a variant of the rules needs, for later study
    keep.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(f"{keep}.npz", clean=y, noisy=noisy, probe=probs, logits=dynamics.logits)
    found["aum"] = score({s.row for s in dynamics.suspects()}, truth)
    mean = dynamics.mean_probs()
    everyone = np.ones(len(noisy), dtype=bool)
    found["dyn-cl"] = score(cl_flags(mean, noisy), truth)
    found["dyn-cl+cleanlab"] = score(cleanlab_flags(mean, noisy, everyone), truth)
    aum_flags, probe_flags = {s.row for s in dynamics.suspects()}, cl_flags(probs, noisy, judged)
    found["probe&aum"] = score(aum_flags & probe_flags, truth)
    found["flags"] = {"aum": sorted(aum_flags), "probe": sorted(probe_flags), "probe&aum": sorted(aum_flags & probe_flags)}
    if not deep:
        cache[key] = found
        return
    cfg = run.settings()
    started = time.perf_counter()
    deep_splits = type(splits)(noisy_train, splits.val, splits.test, splits.labels, "text", "label")
    deep_probs, deep_judged = deep_labels.out_of_fold_probs(cfg, deep_splits, noisy, log=lambda _: None)
    found["deep_seconds"] = time.perf_counter() - started
    found["deep_kappa"] = label_checks.agreement(deep_probs, noisy, deep_judged)[1]
    found["deep"] = score(cl_flags(deep_probs, noisy, deep_judged), truth)
    found["deep+cleanlab"] = score(cleanlab_flags(deep_probs, noisy, deep_judged), truth)
    np.savez_compressed(f"{keep}-deep.npz", deep=deep_probs)
    found["flags"]["deep"] = sorted(cl_flags(deep_probs, noisy, deep_judged))
    cache[key] = found


def retrain(name: str, share: float, rows: int, folder: Path, cache: dict, drop: list[str]) -> None:
    key = f"{name}/{share:g}/retrain"
    if key in cache:
        return
    splits, y = sample(name, rows)
    noisy, truth = plant(y, share, len(splits.labels))
    found = {}
    run, _ = run_on(folder / key, splits, splits.train, "clean")
    found["clean"] = json.loads(run.metrics_file.read_text())["test"]["accuracy"]
    flagged = cache[f"{name}/{share:g}"]["flags"]
    flagged.setdefault("probe&aum", sorted(set(flagged["probe"]) & set(flagged["aum"])))
    for detector in drop:
        gone = set(flagged[detector])
        kept = [i for i in range(len(y)) if i not in gone]
        part = with_labels(splits.train.subset(kept), noisy[kept], splits.labels)
        run, _ = run_on(folder / key, splits, part, f"drop-{detector}")
        found[f"drop-{detector}"] = json.loads(run.metrics_file.read_text())["test"]["accuracy"]
    cache[key] = found


def tables(cache: dict) -> None:
    print("\n| data | moved | detector | flagged | precision | recall | F1 |")
    print("|---|---|---|---|---|---|---|")
    for key, found in cache.items():
        if key.endswith("/retrain") or key.startswith("_"):
            continue
        name, share = key.split("/")
        for detector in ("probe", "probe+cleanlab", "aum", "dyn-cl", "dyn-cl+cleanlab", "probe&aum", "deep",
                         "deep+cleanlab"):
            if detector not in found:
                continue
            s = found[detector]
            print(f"| {name} ({found['rows']:,} rows, {found['classes']} classes) | {float(share):.0%} | {detector} | "
                  f"{s['flagged']} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} |")
    print("\n| data | moved | probe kappa | deep kappa | probe s | train s | deep s |")
    print("|---|---|---|---|---|---|---|")
    for key, found in cache.items():
        if not key.endswith("/retrain") and not key.startswith("_"):
            deep = f"{found['deep_kappa']:.3f} | " if "deep_kappa" in found else "- | "
            print(f"| {key.split('/')[0]} | {float(key.split('/')[1]):.0%} | {found['probe_kappa']:.3f} | {deep}"
                  f"{found['probe_seconds']:.0f} | {found['train_seconds']:.0f} | {found.get('deep_seconds', 0):.0f} |")
    print("\n| data | moved | test acc: clean | noisy | noisy, each detector's flags dropped |")
    print("|---|---|---|---|---|")
    for key, found in cache.items():
        if key.endswith("/retrain"):
            name, share, _ = key.split("/")
            noisy = cache[f"{name}/{share}"]["noisy_test_accuracy"]
            dropped = ", ".join(f"{k[5:]} {v:.4f}" for k, v in found.items() if k.startswith("drop-"))
            print(f"| {name} | {float(share):.0%} | {found['clean']:.4f} | {noisy:.4f} | {dropped} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="sst2,tweets,banking77")
    parser.add_argument("--noise", default="0.1,0.05,0.2")
    parser.add_argument("--retrain", default="0.1", help="noise levels at which to retrain without the flags")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--deep", default="0.1", help="noise levels at which to run check --deep's folds too")
    parser.add_argument("--drop", default="probe&aum,aum,probe", help="detectors whose flags --retrain drops")
    parser.add_argument("--cache", default="bench-label-errors.json")
    args = parser.parse_args()
    cache_file = Path(args.cache)
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    cache["_keep"] = str(cache_file.with_suffix(""))
    source = models.resolve("minilm")
    encoder_parts = (load_encoder(source), models.load_tokenizer(source))
    with tempfile.TemporaryDirectory(prefix="tunesmith-bench-") as scratch:
        for share in (float(s) for s in args.noise.split(",")):
            for name in args.datasets.split(","):
                deep = share in [float(s) for s in args.deep.split(",") if s]
                detectors(name, share, args.rows, Path(scratch), cache, encoder_parts, deep)
                cache_file.write_text(json.dumps(cache, indent=1))
                tables({k: v for k, v in cache.items() if not k.endswith("/retrain")})
        for share in (float(s) for s in args.retrain.split(",") if s):
            for name in args.datasets.split(","):
                retrain(name, share, args.rows, Path(scratch), cache, args.drop.split(","))
                cache_file.write_text(json.dumps(cache, indent=1))
    tables(cache)


if __name__ == "__main__":
    main()
