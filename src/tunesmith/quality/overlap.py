"""Evaluation texts that repeat part of a training text word for word: a leak the embedding
comparison (neighbours.py) does not see, because a phrase and the sentence it was cut from are
far apart as vectors.

An evaluation text overlaps a training text when
- it is *inside* one: its words appear, whole and in order, within one training text (a phrase
  cut from a training sentence, or the same text), or
- it *shares a span* with one: a run of SPAN_WORDS consecutive words (the sentence a training
  phrase was cut from; a pasted paragraph).

Why these two: a validation split carved from SST-2's training file (the treebank's phrases,
parts of the same sentences) has 88% of its rows inside a training text and 44% sharing an
8-word span, against 0.2% and 0.3% of the official dev sentences; on the rows that overlap in
neither way a full fine-tune scores within 2 points of dev, on all validation rows 5.7 points
above it (docs/benchmarks.md, "What a carved validation split says on SST-2"). Where the test
file overlaps as much (banking77: 7.8% of a carved split and 7.4% of the official test set share
an 8-word span: customers ask in the same words), the overlap is how the data is, not a leak of
the split; `tunesmith auto` compares the two shares before moving anything (holdout.py).

Words are whitespace-separated and lower-cased, and each Chinese or Japanese character is a
word of its own (that text has no spaces). A character carries less than a word, so where most
of the training text is such characters the span is SPAN_CHARACTERS long: on ChnSentiCorp 8
characters in a row are common phrasing (17% of a carved validation split and 15% of the
official dev set share them with training), while 16 find the same review edited or pasted
into another (1.8% and 1.5%; bench/overlap_span.py, docs/benchmarks.md).
"""

from __future__ import annotations

import re

SPAN_WORDS = 8  # shorter runs are common phrasing: 31% of banking77's test questions share 6 words with training
SPAN_CHARACTERS = 16  # the span where most training words are single Chinese/Japanese characters
# Han (with extension A and compatibility ideographs), hiragana and katakana.
CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")
# Above this many training words the span index (one entry per word position) would take
# gigabytes in Python; the check then looks for texts inside a training text only.
MAX_SPAN_INDEX_WORDS = 3_000_000


def words(text: str) -> list[str]:
    return CJK.sub(r" \1 ", text.lower()).split()


def span_for(tokenized: list[list[str]]) -> tuple[int, str]:
    """(span length, unit): SPAN_CHARACTERS "characters" where most training words are single
    CJK characters, else SPAN_WORDS "words"."""
    total = sum(len(w) for w in tokenized)
    cjk = sum(1 for w in tokenized for word in w if len(word) == 1 and CJK.match(word))
    return (SPAN_CHARACTERS, "characters") if total and cjk > total / 2 else (SPAN_WORDS, "words")


class TrainingIndex:
    """The training texts, indexed to answer `overlap(text)` without scanning all of them."""

    def __init__(self, train_texts: list[str], span: int | None = None):
        tokenized = [words(text) if isinstance(text, str) else [] for text in train_texts]
        self.span, self.unit = (span, "words") if span else span_for(tokenized)
        self.padded = []  # " w1 w2 ... " per training text: a match on whole words only
        self.rows_with = {}  # word -> training rows holding it
        self.spans = {}  # hash of a run of `span` words -> the first training row holding it
        self.spans_indexed = sum(map(len, tokenized)) <= MAX_SPAN_INDEX_WORDS
        span = self.span
        for row, w in enumerate(tokenized):
            self.padded.append(f" {' '.join(w)} ")
            for word in set(w):
                self.rows_with.setdefault(word, []).append(row)
            if self.spans_indexed:
                for i in range(len(w) - span + 1):
                    self.spans.setdefault(hash(tuple(w[i:i + span])), row)

    def overlap(self, text: str) -> tuple[int, str] | None:
        """(training row, "inside" or "shared span") for the first overlap found, or None."""
        w = words(text) if isinstance(text, str) else []
        if not w:
            return None
        inside = self.containing(w, first=True)
        if inside:
            return inside[0], "inside"
        shared = self.sharing_a_span(w, first=True)
        return (shared[0], "shared span") if shared else None

    def containing(self, w: list[str], first: bool = False) -> list[int]:
        """The indexed rows that hold the words `w` whole and in order; only the first with `first`."""
        if not w:
            return []
        rarest = min(w, key=lambda word: len(self.rows_with.get(word, ())))  # fewest candidates to check
        needle = f" {' '.join(w)} "
        found = []
        for row in self.rows_with.get(rarest, ()):
            if needle in self.padded[row]:
                found.append(row)
                if first:
                    break
        return found

    def sharing_a_span(self, w: list[str], first: bool = False) -> list[int]:
        """The indexed rows that hold a run of `span` of the words `w` (for each run, the first
        row indexed with it); only the first one found with `first`."""
        found = []
        for i in range(len(w) - self.span + 1):
            row = self.spans.get(hash(tuple(w[i:i + self.span])))
            if (row is not None and row not in found
                    and f" {' '.join(w[i:i + self.span])} " in self.padded[row]):  # rules out a hash collision
                found.append(row)
                if first:
                    break
        return found


def overlapping_rows(index: TrainingIndex, texts: list) -> list[tuple[int, int, str]]:
    """(row, training row, kind) for each of `texts` that overlaps a training text."""
    found = []
    for row, text in enumerate(texts):
        hit = index.overlap(text)
        if hit is not None:
            found.append((row, *hit))
    return found
