"""Scoring a batch of items: the sentiment run's label and score, and each item's topics.

Which of the sentiment run's labels is negative (and positive) is read from their names
(negative, neg, 负面, 消极, bearish, ...; for labels 0/1, 0 is negative, as in SST-2), or given with
`--negative-label`. An item's score is P(positive) - P(negative), in [-1, 1].

Topics, one source at most: a column of the stream (`--topics-from ticker`), a keyword file
(`--keywords topics.yaml`: topic -> words or cashtags; a text takes every topic whose words it
contains, case-insensitive), or a topic classifier run (`--topic RUN`). Every item also counts
in the topic "all".
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError
from tunesmith.monitor.store import Scored
from tunesmith.monitor.stream import Item

ALL = "all"
NEGATIVE = re.compile(r"neg|bear|负|消极|差评|悲观", re.IGNORECASE)
POSITIVE = re.compile(r"pos|bull|正|积极|好评|乐观", re.IGNORECASE)


def polarity(labels: list[str], negative: str | None = None) -> tuple[int, int | None]:
    """(index of the negative label, index of the positive label or None)."""
    if negative is not None:
        if negative not in labels:
            raise UserError(f"--negative-label {negative}: not one of the sentiment run's labels ({', '.join(labels)})")
        neg = labels.index(negative)
    elif sorted(labels) == ["0", "1"]:
        neg = labels.index("0")
    else:
        found = [i for i, label in enumerate(labels) if NEGATIVE.search(label)]
        if len(found) != 1:
            raise UserError(f"--negative-label: say which of the sentiment run's labels is negative "
                            f"({', '.join(labels)})")
        neg = found[0]
    positives = [i for i, label in enumerate(labels) if i != neg and (POSITIVE.search(label) or sorted(labels) == ["0", "1"])]
    return neg, positives[0] if len(positives) == 1 else None


def read_keywords(path: str) -> dict[str, list[str]]:
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--keywords {path}: not found") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) and v for v in raw.values()):
        raise UserError(f"--keywords {path}: give a mapping of topic to a list of words, e.g. apple: [$AAPL, iphone]")
    return {str(topic): [str(w).lower() for w in words] for topic, words in raw.items()}


class Scorer:
    def __init__(self, sentiment, negative_label: str | None = None, topics_from: str | None = None,
                 keywords: str | None = None, topic_run=None):
        if sum(x is not None for x in (topics_from, keywords, topic_run)) > 1:
            raise UserError("--topics-from, --keywords and --topic: give one way of finding topics")
        self.sentiment = sentiment  # a Predictor
        self.negative, self.positive = polarity(sentiment.labels, negative_label)
        self.topics_from = topics_from
        self.keywords = read_keywords(keywords) if keywords else None
        self.topic_run = topic_run  # a Predictor, or None

    def score(self, items: list[Item]) -> list[Scored]:
        if not items:
            return []
        texts = [item.text for item in items]
        probs = np.asarray(self.sentiment.predict(texts))
        topics = self._topics(items, texts)
        out = []
        for item, p, own in zip(items, probs, topics):
            score = (p[self.positive] if self.positive is not None else 0.0) - p[self.negative]
            out.append(Scored(item.id, item.time, item.text, self.sentiment.labels[int(p.argmax())],
                              int(p.argmax()) == self.negative, float(score), [ALL, *own]))
        return out

    def _topics(self, items: list[Item], texts: list[str]) -> list[list[str]]:
        if self.topics_from is not None:
            missing = [item.id for item in items if self.topics_from not in item.fields]
            if missing:
                raise UserError(f"--topics-from {self.topics_from}: item {missing[0]} has no such field")
            return [[str(item.fields[self.topics_from])] if str(item.fields[self.topics_from]).strip() else []
                    for item in items]
        if self.keywords is not None:
            lowered = [t.lower() for t in texts]
            return [[topic for topic, words in self.keywords.items() if any(w in text for w in words)]
                    for text in lowered]
        if self.topic_run is not None:
            probs = np.asarray(self.topic_run.predict(texts))
            return [[self.topic_run.labels[int(i)]] for i in probs.argmax(axis=1)]
        return [[] for _ in items]
