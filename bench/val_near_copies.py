"""How much a validation split's near-copies of training texts flatter it: for each finished
single-label text run, its accuracy on all validation rows, on the rows its quality check found
nearly repeating a training text (quality/near_duplicates.csv), on the rows whose text appears
inside a training text (a phrase cut from a training sentence: SST-2's treebank phrases), on the
rows that are neither, and on test; and how many test rows appear inside a training text.

    python bench/val_near_copies.py runs/sst2-full-all ...
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from tunesmith.inference import Predictor
from tunesmith.runs import Run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="finished run folders (trained with the quality checks on)")
    for folder in parser.parse_args().runs:
        run = Run(Path(folder))
        listed = run.path / "quality" / "near_duplicates.csv"
        if not listed.is_file():
            print(f"{folder}: no quality/near_duplicates.csv (trained with --no-quality-checks, or nothing found)")
            continue
        with listed.open(encoding="utf-8") as f:
            near = {row["text"] for row in csv.DictReader(f) if row["split"] == "val"}
        val, labels = run.split("val"), run.labels()
        probs = np.asarray(Predictor.from_run(run, "torch").predict(val.texts))
        right = np.array([labels[i] == str(given) for i, given in zip(probs.argmax(1), val.labels)])
        is_near = np.array([text in near for text in val.texts])
        inside = inside_training(run.split("train").texts)
        is_inside = np.array([inside(text) for text in val.texts])
        neither = ~(is_near | is_inside)
        test = json.loads(run.metrics_file.read_text(encoding="utf-8"))["test"]
        test_texts = run.split("test").texts
        test_inside = sum(map(inside, test_texts))
        print(f"{folder}: validation accuracy {right.mean():.4f} on all {len(right)} rows, "
              f"{share(right, is_near)} on the {is_near.sum()} near-copies, "
              f"{share(right, ~is_near)} on the other {(~is_near).sum()}, "
              f"{share(right, is_inside)} on the {is_inside.sum()} found inside a training text, "
              f"{share(right, neither)} on the {neither.sum()} that are neither; "
              f"test accuracy {test['accuracy']:.4f} ({test_inside} of {len(test_texts)} test rows inside a training text)")


def inside_training(train_texts: list[str]):
    """A test `text -> bool`: do the text's words (lowercased) appear, whole and in order, inside
    one training text? Padding with spaces keeps "art" from matching inside "heart", and a
    newline between texts keeps a match from spanning two of them."""
    blob = "\n".join(f" {' '.join(t.lower().split())} " for t in train_texts)
    return lambda text: bool(text.split()) and f" {' '.join(text.lower().split())} " in blob


def share(right: np.ndarray, rows: np.ndarray) -> str:
    return f"{right[rows].mean():.4f}" if rows.any() else "nan"


if __name__ == "__main__":
    main()
