"""Text-level findings that need no model: texts with nothing left after normalisation, and
rows in another writing system than the rest of the data (a language check by script: it
tells Chinese from English, not English from German)."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

NOISE = re.compile(r"https?://\S+|www\.\S+|@\w+")  # links and @mentions carry no task content
MIN_LETTERS = 3  # fewer letters than this say nothing reliable about the script


def normalised(text: str) -> str:
    """NFKC (full-width to half-width, compatibility forms), links and mentions removed, and
    only letters and digits kept."""
    text = NOISE.sub(" ", unicodedata.normalize("NFKC", text))
    return "".join(ch for ch in text if ch.isalnum())


def empty_after_normalising(texts: list[str]) -> list[int]:
    return [i for i, t in enumerate(texts) if not normalised(_joined(t))]


def script(text: str) -> str | None:
    """The writing system most of a text's letters are in (LATIN, CJK, CYRILLIC, ARABIC, ...);
    None for texts with fewer than MIN_LETTERS letters. Japanese kana count as CJK."""
    counts = letter_scripts([text])
    if sum(counts.values()) < MIN_LETTERS:
        return None
    return counts.most_common(1)[0][0]


def _script_of(ch: str) -> str:
    name = unicodedata.name(ch, "UNKNOWN")
    if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "HALFWIDTH KATAKANA")):
        return "CJK"
    return name.split(" ")[0]


def other_script_rows(texts: list[str]) -> tuple[str | None, list[int]]:
    """(the data's main script, rows written mostly in another one)."""
    scripts = [script(t) for t in texts]
    counts = Counter(s for s in scripts if s is not None)
    if not counts:
        return None, []
    main = counts.most_common(1)[0][0]
    return main, [i for i, s in enumerate(scripts) if s is not None and s != main]


def _joined(text) -> str:
    if isinstance(text, dict):  # a question and its context, a query and its passage: the values are the text
        return " ".join(map(_joined, text.values()))
    return " ".join(map(str, text)) if isinstance(text, (tuple, list)) else str(text)


def letter_scripts(texts: list, limit: int = 2000) -> Counter:
    """Letters per writing system over the first `limit` texts (token lists and pairs joined)."""
    counts: Counter = Counter()
    for text in texts[:limit]:
        for ch in _joined(text):
            if ch.isalpha():
                counts[_script_of(ch)] += 1
    return counts

