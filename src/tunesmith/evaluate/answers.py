"""Exact match and F1 of extracted answers, as the official scripts score them.

English (and any answer without Chinese characters) follows SQuAD's `evaluate-v2.0.py`:
lower-case, drop punctuation and the articles a/an/the, split on whitespace; F1 over the
bag of tokens. Chinese follows CMRC 2018's script: each Chinese character is a token and runs
of other letters or digits are one, punctuation (Chinese, English, any Unicode punctuation)
dropped; F1 over the
longest common substring of the two token lists. A question is scored against each of its
reference answers and keeps the best; a question without answers (SQuAD 2.0) scores 1 only
for an empty prediction. Scores are fractions (0-1), like every other tunesmith metric; the
official scripts print them times 100.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

CJK_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
ARTICLES = re.compile(r"\b(a|an|the)\b")
# CMRC's list of punctuation, beside ASCII's.
CHINESE_PUNCTUATION = set("－：_*^/\\~`+=，。：？！“”；’《》……·、「」（）－～『』")


def chinese(text: str) -> bool:
    return bool(CJK_CHAR.search(text))


def squad_tokens(text: str) -> list[str]:
    """SQuAD's normalize_answer, split into tokens."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return ARTICLES.sub(" ", text).split()


def cmrc_tokens(text: str) -> list[str]:
    """CMRC 2018's mixed_segmentation with punctuation removed: a token per Chinese character,
    one per run of other characters."""
    tokens, run = [], ""
    for ch in text.lower():
        if _punctuation(ch):
            ch = " "
        if CJK_CHAR.match(ch) or ch.isspace():
            tokens += [run] if run else []
            run = ""
            if not ch.isspace():
                tokens.append(ch)
        else:
            run += ch
    return tokens + ([run] if run else [])


def _punctuation(ch: str) -> bool:
    return ch in CHINESE_PUNCTUATION or ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _unpunctuated(text: str) -> str:
    """CMRC's remove_punctuation: lower-cased, trimmed, punctuation dropped (spaces kept)."""
    return "".join(ch for ch in text.lower().strip() if not _punctuation(ch))


def _bag_f1(predicted: list[str], reference: list[str]) -> float:
    common = sum((Counter(predicted) & Counter(reference)).values())
    if not predicted or not reference:
        return float(predicted == reference)
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(reference)
    return 2 * precision * recall / (precision + recall)


def _substring_f1(predicted: list[str], reference: list[str]) -> float:
    if not predicted or not reference:
        return float(predicted == reference)
    longest = 0
    previous = [0] * (len(reference) + 1)
    for p in predicted:
        current = [0] * (len(reference) + 1)
        for j, r in enumerate(reference, start=1):
            if p == r:
                current[j] = previous[j - 1] + 1
                longest = max(longest, current[j])
        previous = current
    if not longest:
        return 0.0
    precision, recall = longest / len(predicted), longest / len(reference)
    return 2 * precision * recall / (precision + recall)


def score(predicted: str, references: list[str]) -> tuple[float, float]:
    """(exact match, F1) of one prediction against a question's references (none: unanswerable)."""
    if not references:
        empty = float(not predicted.strip())
        return empty, empty
    best_exact, best_f1 = 0.0, 0.0
    for reference in references:
        tokenise, f1 = (cmrc_tokens, _substring_f1) if chinese(reference) else (squad_tokens, _bag_f1)
        ours, theirs = tokenise(predicted), tokenise(reference)
        same = _unpunctuated(predicted) == _unpunctuated(reference) if chinese(reference) else ours == theirs
        best_exact = max(best_exact, float(same))
        best_f1 = max(best_f1, f1(ours, theirs))
    return best_exact, best_f1


def answer_metrics(predicted: list[str], references: list[list[str]]) -> dict:
    """exact_match and f1 over all questions, and over those with and without an answer
    (has_answer_*, no_answer_*) when both kinds are present."""
    scores = [score(p, r) for p, r in zip(predicted, references)]
    metrics = {"exact_match": _mean(s[0] for s in scores), "f1": _mean(s[1] for s in scores), "count": len(scores)}
    answered = [bool(r) for r in references]
    if any(answered) and not all(answered):
        for name, keep in (("has_answer", True), ("no_answer", False)):
            part = [s for s, a in zip(scores, answered) if a == keep]
            metrics |= {f"{name}_exact_match": _mean(s[0] for s in part), f"{name}_f1": _mean(s[1] for s in part),
                        f"{name}_count": len(part)}
    return metrics


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
