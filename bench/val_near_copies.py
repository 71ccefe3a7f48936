"""How much a validation split's near-copies of training texts flatter it: for each finished
single-label text run, its accuracy on all validation rows, on the rows its quality check found
nearly repeating a training text (quality/near_duplicates.csv), on the others, and on test.

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
        test = json.loads(run.metrics_file.read_text(encoding="utf-8"))["test"]
        print(f"{folder}: validation accuracy {right.mean():.4f} on all {len(right)} rows, "
              f"{right[is_near].mean() if is_near.any() else float('nan'):.4f} on the {is_near.sum()} near-copies, "
              f"{right[~is_near].mean():.4f} on the other {(~is_near).sum()}; test accuracy {test['accuracy']:.4f}")


if __name__ == "__main__":
    main()
