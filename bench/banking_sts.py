"""Scored sentence pairs from banking77, for `--task sentence-embedding` (docs/benchmarks.md).

Two customer messages score 2 when they have the same intent, 1 when their intents share a
word (card_arrival and card_delivery_estimate), else 0: a graded similarity made from real
messages, since no STS-style set ships in a package. Writes banking_sts.csv (4,000 pairs, seed 0):

    python bench/banking_sts.py
    tunesmith train banking_sts.csv --task sentence-embedding
"""

import csv
import random

SOURCE = "../shared/datasets/banking77/train.csv"
PAIRS = 4000


def main() -> None:
    with open(SOURCE, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_intent: dict[str, list[str]] = {}
    for row in rows:
        by_intent.setdefault(row["category"], []).append(row["text"])
    intents = sorted(by_intent)
    words = {c: set(c.split("_")) - {"a", "or", "of", "to", "not", "is"} for c in intents}
    rng = random.Random(0)
    out = []
    for _ in range(PAIRS):
        intent = rng.choice(intents)
        first = rng.choice(by_intent[intent])
        kind = rng.randrange(3)
        related = [d for d in intents if d != intent and words[d] & words[intent]]
        if kind == 0:
            other, score = intent, 2
        elif kind == 1 and related:
            other, score = rng.choice(related), 1
        else:
            other, score = rng.choice([d for d in intents if d != intent and not words[d] & words[intent]]), 0
        second = rng.choice([t for t in by_intent[other] if t != first])
        out.append({"sentence1": first, "sentence2": second, "score": score})
    with open("banking_sts.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["sentence1", "sentence2", "score"])
        writer.writeheader()
        writer.writerows(out)


if __name__ == "__main__":
    main()
