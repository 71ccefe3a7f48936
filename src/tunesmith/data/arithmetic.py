"""`arithmetic`: seeded word problems with a number for an answer, the built-in data of `--task rl`.

There is no maths set among the offline data, so the problems are generated: one or two steps
of adding, taking away or multiplying small numbers, in a handful of everyday templates
("Mia has 7 apples. She buys 5 more. ..."). The same seed gives the same problems on every
machine; train, validation and test come from disjoint seeds, and a test question never repeats
a training one word for word. Small models get a measurable share right before tuning (the
share is in docs/benchmarks.md), which is what reinforcement learning with a verifiable reward
needs: some completions in each group earn the reward.
"""

from __future__ import annotations

import random

import pandas as pd

from tunesmith.data.sources import Table

NAME = "arithmetic"
SIZES = {"train": 400, "val": 50, "test": 100}
SEEDS = {"train": 1, "val": 2, "test": 3}
# What the prompt asks for, so that the answer can be read back (rewards.final_number, rewards.FORMAT).
INSTRUCTION = "Work it out briefly, then end with the line 'Answer: <number>'."

PEOPLE = ("Mia", "Tom", "Aisha", "Wei", "Lucas", "Sara", "Ravi", "Lena", "Omar", "Yuki")
THINGS = ("apples", "stickers", "marbles", "books", "pencils", "cookies", "stamps", "shells")


def _step(rng: random.Random, total: int, thing: str) -> tuple[str, int]:
    """One more event in the story, and the count after it."""
    kinds = ("more",) + (("less",) if total > 2 else ()) + (("times",) if total <= 12 else ())
    kind = rng.choice(kinds)
    if kind == "more":
        n = rng.randint(2, 12)
        return rng.choice((f"Then they buy {n} more {thing}.", f"A friend gives them {n} more {thing}.")), total + n
    if kind == "less":
        n = rng.randint(1, total - 1)
        return rng.choice((f"Then they give away {n} {thing}.", f"Then they lose {n} {thing}.")), total - n
    n = rng.randint(2, 4)
    return f"Then the number of {thing} they have becomes {n} times as many.", total * n


def problem(rng: random.Random) -> tuple[str, int]:
    """A question and its answer."""
    person, thing = rng.choice(PEOPLE), rng.choice(THINGS)
    total = rng.randint(3, 20)
    sentences = [f"{person} has {total} {thing}."]
    for _ in range(rng.choice((1, 1, 1, 2))):
        sentence, total = _step(rng, total, thing)
        sentences.append(sentence)
    sentences.append(f"How many {thing} does {person} have now?")
    return " ".join(sentences), total


def splits() -> dict[str, Table]:
    """Train, val and test tables with `prompt` (the question and the instruction) and `answer`."""
    out, seen = {}, set()
    for split, size in SIZES.items():
        rng, rows = random.Random(SEEDS[split]), []
        while len(rows) < size:
            question, answer = problem(rng)
            if question in seen:
                continue
            seen.add(question)
            rows.append({"prompt": f"{question}\n{INSTRUCTION}", "answer": str(answer)})
        out[split] = Table(pd.DataFrame(rows), f"{NAME} {split}", "problem")
    return out
