"""How much a validation split's near-copies of training texts flatter it: for each finished
single-label text run, its accuracy on all validation rows, on the rows its quality check found
nearly repeating a training text (quality/near_duplicates.csv), on the rows that repeat part of
a training text word for word (quality/overlap.py: inside one, a phrase cut from a training
sentence as in SST-2's treebank phrases, or sharing 8 words with one), on the rows that are
neither, and on test; and how many test rows overlap a training text that way.

    python bench/val_near_copies.py runs/sst2-full-all ...
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from tunesmith.inference import Predictor
from tunesmith.quality import overlap
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
        index = overlap.TrainingIndex(run.split("train").texts)
        kinds = {row: kind for row, _, kind in overlap.overlapping_rows(index, val.texts)}
        is_inside = np.array([kinds.get(i) == "inside" for i in range(len(val))])
        is_span = np.array([kinds.get(i) == "shared span" for i in range(len(val))])
        neither = ~(is_near | is_inside | is_span)
        test = json.loads(run.metrics_file.read_text(encoding="utf-8"))["test"]
        test_texts = run.split("test").texts
        test_overlaps = len(overlap.overlapping_rows(index, test_texts))
        print(f"{folder}: validation accuracy {right.mean():.4f} on all {len(right)} rows, "
              f"{share(right, is_near)} on the {is_near.sum()} near-copies, "
              f"{share(right, ~is_near)} on the other {(~is_near).sum()}, "
              f"{share(right, is_inside)} on the {is_inside.sum()} found inside a training text, "
              f"{share(right, is_span)} on the other {is_span.sum()} sharing {index.span} words with one, "
              f"{share(right, neither)} on the {neither.sum()} that are none of these; "
              f"test accuracy {test['accuracy']:.4f} ({test_overlaps} of {len(test_texts)} test rows overlap a training text)")


def share(right: np.ndarray, rows: np.ndarray) -> str:
    return f"{right[rows].mean():.4f}" if rows.any() else "nan"


if __name__ == "__main__":
    main()
