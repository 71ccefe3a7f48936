"""Sentence pairs from banking77 (docs/benchmarks.md), since no STS-style or reranking set ships
in a package.

Scored pairs for `--task sentence-embedding`: two customer messages score 2 when they have the
same intent, 1 when their intents share a word (card_arrival and card_delivery_estimate), else
0. Writes banking_sts.csv (4,000 pairs, seed 0):

    python bench/banking_sts.py
    tunesmith train banking_sts.csv --task sentence-embedding

Triplets for `--task reranker` (`--triplets`): a message, another of its intent (positive), and
one of a related intent (a hard negative). Writes banking_triplets.csv (4,000 rows, seed 0):

    python bench/banking_sts.py --triplets
    tunesmith train banking_triplets.csv --task reranker --max-train-samples 1500
"""

import csv
import random
import sys

SOURCE = "../shared/datasets/banking77/train.csv"
PAIRS = 4000


def messages() -> dict[str, list[str]]:
    with open(SOURCE, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_intent: dict[str, list[str]] = {}
    for row in rows:
        by_intent.setdefault(row["category"], []).append(row["text"])
    return by_intent


def intent_words(intents: list[str]) -> dict[str, set[str]]:
    return {c: set(c.split("_")) - {"a", "or", "of", "to", "not", "is"} for c in intents}


def write_csv(name: str, rows: list[dict]) -> None:
    with open(name, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def triplets() -> None:
    by_intent = messages()
    intents = sorted(by_intent)
    words = intent_words(intents)
    rng = random.Random(0)
    out = []
    while len(out) < PAIRS:
        intent = rng.choice(intents)
        related = [d for d in intents if d != intent and words[d] & words[intent]]
        if not related:
            continue
        anchor, positive = rng.sample(by_intent[intent], 2)
        out.append({"anchor": anchor, "positive": positive, "negative": rng.choice(by_intent[rng.choice(related)])})
    write_csv("banking_triplets.csv", out)


def main() -> None:
    by_intent = messages()
    intents = sorted(by_intent)
    words = intent_words(intents)
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
    write_csv("banking_sts.csv", out)


if __name__ == "__main__":
    triplets() if "--triplets" in sys.argv[1:] else main()
