"""Word-tagged sentences for token classification (NER): reading, tag schemes, raw-text words.

Formats:
- CoNLL columns: one word per line, the word first and its tag last (other columns, like
  CoNLL-2003's POS and chunk tags, are ignored), a blank line between sentences,
  `-DOCSTART-` lines skipped.
- JSONL: one sentence per line, `{"tokens": [...], "tags": [...]}` (also `words` /
  `ner_tags`, as Hugging Face datasets name them, when the tags are strings).
- A folder holding `train`, `valid`/`dev`/`validation` and `test` files in either format.
- A built-in set's name (`peoples-daily-ner`, Chinese; see `tunesmith.data.builtin.TAGGED`).

Tags are normalised to BIO (IOB2): every entity starts with B-. Files in IOB1, where I-
starts an entity and B- appears only between two touching entities of one type, are
converted silently; an I-X that follows neither B-X nor I-X in a BIO file is a mistake,
repaired to B-X and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.sources import decode_file, json_lines
from tunesmith.errors import UserError
from tunesmith.io import lines

SPLIT_NAMES = {"train": ("train",), "val": ("valid", "dev", "validation", "val"), "test": ("test",)}
TAGGED_SUFFIXES = (".txt", ".conll", ".iob", ".bio", ".tsv", ".jsonl", ".json")


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    source: str
    first_line: int  # 1-based line of the first word (CoNLL) or of the sentence (JSONL)
    line_per_word: bool  # CoNLL: word i is on line first_line + i

    def where(self, word: int | None = None) -> str:
        if word is not None and self.line_per_word:
            return f"{self.source} line {self.first_line + word}"
        return f"{self.source} line {self.first_line}"


def read_tagged_source(path: str, encoding: str = "utf-8") -> dict[str, list[Sentence]]:
    """{"all": sentences} for a file or a built-in tagged set (`builtin.TAGGED`);
    {"train": ..., "val": ..., "test": ...} for a folder."""
    from tunesmith.data import builtin

    if path in builtin.TAGGED:
        return {"all": builtin.TAGGED[path]()}
    p = Path(path)
    if not p.exists():
        raise UserError(f"{path}: not found; give a CoNLL or JSONL file (tokens + tags) or a folder of them")
    if p.is_file():
        return {"all": read_tagged_file(p, encoding)}
    found = {}
    for split, stems in SPLIT_NAMES.items():
        for f in sorted(p.iterdir()):
            if f.is_file() and f.stem.lower() in stems and f.suffix.lower() in TAGGED_SUFFIXES:
                found[split] = read_tagged_file(f, encoding)
                break
    if "train" not in found:
        raise UserError(f"{path}: folder has no train file (train.txt, train.conll or train.jsonl)")
    return found


def read_tagged_file(path: Path, encoding: str = "utf-8", need_tags: bool = True) -> list[Sentence]:
    """Sentences of a CoNLL or JSONL file. `need_tags=False` (prediction input) also accepts
    CoNLL lines holding only the word; their tags read as O."""
    text = decode_file(path, encoding)
    sentences = _read_jsonl(path, text) if path.suffix.lower() in (".jsonl", ".json") else _read_conll(path, text, need_tags)
    if not sentences:
        raise UserError(f"{path}: no sentences found; expected CoNLL columns (word ... tag) or JSONL with tokens and tags")
    return sentences


def _read_conll(path: Path, text: str, need_tags: bool = True) -> list[Sentence]:
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    start = 0

    def close() -> None:
        if words:
            sentences.append(Sentence(list(words), list(tags), str(path), start, True))
        words.clear()
        tags.clear()

    for number, line in enumerate(lines(text), start=1):
        parts = line.split()
        if not parts:
            close()
            continue
        if parts[0] == "-DOCSTART-":
            close()
            continue
        if len(parts) < 2 and need_tags:
            raise UserError(f"{path} line {number}: expected a word and its tag separated by a space or tab, "
                            f"got {line.strip()[:40]!r}")
        if not words:
            start = number
        words.append(parts[0])
        tags.append(parts[-1] if len(parts) > 1 else "O")
    close()
    return sentences


def _read_jsonl(path: Path, text: str) -> list[Sentence]:
    sentences = []
    for number, row in json_lines(path, text, '{"tokens": [...], "tags": [...]}'):
        words, tags = row.get("tokens", row.get("words")), row.get("tags", row.get("ner_tags"))
        if not isinstance(words, list) or not isinstance(tags, list):
            raise UserError(f"{path} line {number}: expected {{\"tokens\": [...], \"tags\": [...]}}")
        if len(words) != len(tags):
            raise UserError(f"{path} line {number}: {len(words)} tokens but {len(tags)} tags; give one tag per token")
        if any(not isinstance(t, str) for t in tags):
            raise UserError(f"{path} line {number}: tags must be strings like 'B-PER' (numeric tag ids need their names)")
        if words:
            sentences.append(Sentence([str(w) for w in words], list(tags), str(path), number, False))
    return sentences


# ------------------------------------------------------------------------------------
# Tag schemes
# ------------------------------------------------------------------------------------

TAG = re.compile(r"^(?:O|[BI]-\S+)$")


def entity_type(tag: str) -> str | None:
    return None if tag == "O" else tag[2:]


def validate_tags(sentences: list[Sentence]) -> None:
    for s in sentences:
        for i, tag in enumerate(s.tags):
            if not TAG.match(tag):
                raise UserError(f"{s.where(i)}: tag {tag!r} is not O, B-TYPE or I-TYPE (BIO or IOB1 tags)")


def detect_scheme(sentences: list[Sentence]) -> str:
    """'iob1' when I- starts entities and every B- sits right after the same type; else 'bio'."""
    i_starts = b_starts = 0
    for s in sentences:
        previous = "O"
        for tag in s.tags:
            kind = entity_type(tag)
            if kind is not None and entity_type(previous) != kind:
                if tag.startswith("I-"):
                    i_starts += 1
                else:
                    b_starts += 1
            previous = tag
    return "iob1" if i_starts > 0 and b_starts == 0 else "bio"


def to_bio(tags: list[str]) -> tuple[list[str], list[int]]:
    """BIO tags, and the positions of I- tags that started an entity (now B-)."""
    out, repaired = [], []
    previous = "O"
    for i, tag in enumerate(tags):
        if tag.startswith("I-") and entity_type(previous) != tag[2:]:
            tag = "B-" + tag[2:]
            repaired.append(i)
        out.append(tag)
        previous = tag
    return out, repaired


def normalise(sentences: list[Sentence], scheme: str) -> list[str]:
    """Rewrite tags to BIO in place; return warnings for repairs (none for IOB1 input)."""
    fixed = []
    for s in sentences:
        s.tags, repaired = to_bio(s.tags)
        fixed.extend(s.where(i) for i in repaired)
    if fixed and scheme == "bio":
        shown = ", ".join(fixed[:3]) + (", ..." if len(fixed) > 3 else "")
        return [f"{len(fixed)} I- tags follow neither B- nor I- of their type; repaired to B- ({shown})"]
    return []


def spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities as (type, first word, last word + 1), conlleval/seqeval rules: an entity
    starts at B-X, or at I-X after O or after another type, and runs while I-X continues."""
    found = []
    kind, start = None, 0
    for i, tag in enumerate(list(tags) + ["O"]):
        t = entity_type(tag)
        if kind is not None and (t != kind or tag.startswith("B-")):
            found.append((kind, start, i))
            kind = None
        if t is not None and kind is None:
            kind, start = t, i
    return found


# ------------------------------------------------------------------------------------
# Raw text -> words with character offsets (for `predict` on plain text)
# ------------------------------------------------------------------------------------

# Words, keeping inner hyphens, apostrophes and dots ("U.S", "don't", "1996-08-22");
# any other non-space character is a word of its own, as in CoNLL's tokenisation. Chinese and
# Japanese characters are words of their own too: their text has no spaces, and their NER data
# (People's Daily, MSRA, Weibo) is tagged one character at a time, so offsets are in characters.
CJK = "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"  # kana and ideographs, not Hangul (spaced)
_LETTERS = f"(?:(?!{CJK})\\w)+"
WORD = re.compile(f"{CJK}|{_LETTERS}(?:['’.\\-/]{_LETTERS})*|[^\\w\\s]")


def split_words(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    matches = list(WORD.finditer(text))
    return [m.group() for m in matches], [(m.start(), m.end()) for m in matches]
