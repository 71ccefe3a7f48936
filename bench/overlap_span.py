"""How long a shared span must be before it means a copied text, not common phrasing: the share
of a validation split carved from a training file (10%, seeded) and of the official evaluation
file that overlap the rest of the training file (quality/overlap.py: inside a training text, or
sharing SPAN consecutive words with one), for several spans. Where both shares fall to a few
percent and stay level as the span grows, what is left is texts copied or edited (the span
chosen for `check`, `train` and `auto`).

    python bench/overlap_span.py ../shared/datasets/chnsenticorp/train.tsv ../shared/datasets/chnsenticorp/dev.tsv
"""

from __future__ import annotations

import argparse
import csv
import random

from tunesmith.quality import overlap


def read_texts(path: str, column: str) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        return [row[column] for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train", help="the training file (TSV)")
    parser.add_argument("evaluation", help="the official evaluation file (TSV)")
    parser.add_argument("--column", default="text_a", help="the text column (default: text_a, ChnSentiCorp's)")
    parser.add_argument("--spans", default="8,12,16,24", help="span lengths to try, comma-separated")
    args = parser.parse_args()
    train, evaluation = read_texts(args.train, args.column), read_texts(args.evaluation, args.column)
    rows = list(range(len(train)))
    random.Random(0).shuffle(rows)
    carved = [train[i] for i in rows[: len(train) // 10]]
    rest = [train[i] for i in rows[len(train) // 10:]]
    print(f"default span: {overlap.TrainingIndex(rest).span} {overlap.TrainingIndex(rest).unit}")
    print(f"{'span':>5} {'carved: inside':>15} {'shared span':>12} {'evaluation: inside':>19} {'shared span':>12}")
    for span in map(int, args.spans.split(",")):
        index = overlap.TrainingIndex(rest, span=span)
        shares = []
        for part in (carved, evaluation):
            found = overlap.overlapping_rows(index, part)
            shares += [sum(kind == k for *_, kind in found) / len(part) for k in ("inside", "shared span")]
        print(f"{span:>5} {shares[0]:>15.1%} {shares[1]:>12.1%} {shares[2]:>19.1%} {shares[3]:>12.1%}")


if __name__ == "__main__":
    main()
