"""How much of each evaluation row trains: for every row of a validation split and of a test
file, the longest training text that lies inside it (quality/overlap.py's whole-word rule),
as shares of the rows. On SST-2 the dev sentences hold training texts of 1-2 words (common
phrasing), while rows carved from the training file hold their own sentence's phrases of 3-7
words; this table chose the 3-word line of quality/holdout.py's `is_piece`.

    python bench/carve_pieces.py runs/auto-train/data      # the splits `auto` wrote

The folder holds train.jsonl, val.jsonl and test.jsonl ({"text", "label"} per line).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from tunesmith.quality import overlap

LONGEST = 8  # the last column counts this many words and more


def texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def longest_inside(train: list[str], part: list[str]) -> list[int]:
    """For each row of `part`, the word count of the longest training text inside it (0: none)."""
    index = overlap.TrainingIndex(part)
    longest = [0] * len(part)
    for text in train:
        w = overlap.words(text)
        for row in index.containing(w):
            longest[row] = max(longest[row], len(w))
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("splits", help="a folder with train.jsonl, val.jsonl and test.jsonl")
    folder = Path(parser.parse_args().splits)
    train = texts(folder / "train.jsonl")
    print(f"{'split':>6} {'rows':>6} " + " ".join(f"{k if k < LONGEST else f'{k}+':>6}" for k in range(LONGEST + 1)))
    for name in ("test", "val"):
        part = texts(folder / f"{name}.jsonl")
        counts = Counter(min(n, LONGEST) for n in longest_inside(train, part))
        print(f"{name:>6} {len(part):>6} " + " ".join(f"{counts[k] / len(part):>6.1%}" for k in range(LONGEST + 1)))


if __name__ == "__main__":
    main()
