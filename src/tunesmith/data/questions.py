"""Extractive question-answering data: a context, a question, and where its answer is in the context.

Every format is read into `Question`s. An answer is a text and its character offset in the
context; a question without answers is unanswerable (SQuAD 2.0). Reading checks each answer
against its context: an `answer_start` that is off while the text occurs in the context is
moved to the nearest occurrence (a warning names the row), and an answer whose text is nowhere
in the context is an error naming the row and field.

Formats (each error names the file, the row and the field):
- SQuAD JSON, v1.1 and v2.0, and CMRC 2018 / DRCD, which use its layout:
  `{"data": [{"paragraphs": [{"context", "qas": [{"id", "question", "answers": [{"text",
  "answer_start"}], "is_impossible"}]}]}]}`.
- JSONL (or a JSON array) of flat rows: `context`, `question`, and `answers` in the Hugging Face
  datasets layout (`{"text": [...], "answer_start": [...]}`) or as a list of `{"text",
  "answer_start"}`, or `answer` (a string; found in the context when `answer_start` is not given).
- CSV/TSV: `context`, `question`, `answer` and optionally `answer_start`; an empty answer is
  an unanswerable question.
- `duie-qa`: questions written from the relation triples of the DuIE sentences (`duie_questions`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.sources import decode_file, json_array, json_lines, read_table
from tunesmith.errors import UserError

SPLIT_STEMS = {"train": ("train",), "val": ("val", "dev", "valid", "validation"), "test": ("test",)}
SUFFIXES = (".json", ".jsonl", ".csv", ".tsv")
CONTEXT_KEYS, QUESTION_KEYS = ("context", "passage", "paragraph"), ("question", "query")
BUILTIN = "duie-qa"
ROW_EXAMPLE = '{"context": ..., "question": ..., "answers": {"text": [...], "answer_start": [...]}}'  # for errors


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the context


@dataclass
class Question:
    context: str
    question: str
    answers: list[Answer]  # empty: unanswerable
    where: str  # file and row, for errors and `check`

    def as_input(self) -> dict:
        return {"context": self.context, "question": self.question}

    def as_target(self) -> list[dict]:
        return [{"text": a.text, "answer_start": a.start} for a in self.answers]


@dataclass
class Read:
    """What reading found: the questions of each split, and the repairs it made."""

    splits: dict[str, list[Question]]
    warnings: list[str] = field(default_factory=list)


def looks_like_questions(path: Path) -> bool:
    """A SQuAD-layout JSON file, or rows with a context and a question (for `--task` inference)."""
    if not path.is_file() or path.suffix.lower() not in (".json", ".jsonl"):
        return False
    head = path.read_text(encoding="utf-8", errors="replace")[:4000]
    return '"paragraphs"' in head and '"qas"' in head or ('"context"' in head and '"question"' in head)


def read_source(name: str, encoding: str = "utf-8", need_answers: bool = True) -> Read:
    """{"all": questions} for a file or the built-in set; {"train", "val", "test"} for a folder."""
    if name == BUILTIN:
        return Read({"all": duie_questions()})
    path = Path(name)
    if not path.exists():
        raise UserError(f"{name}: not found; give a SQuAD JSON, JSONL or CSV file of questions, or a folder")
    read = Read({})
    if path.is_file():
        read.splits["all"] = read_file(path, encoding, need_answers, read.warnings)
        return read
    for split, stems in SPLIT_STEMS.items():
        match = next((f for f in sorted(path.iterdir()) if f.is_file() and f.stem.lower() in stems
                      and f.suffix.lower() in SUFFIXES), None)
        if match is not None:
            read.splits[split] = read_file(match, encoding, need_answers, read.warnings)
    if "train" not in read.splits:
        raise UserError(f"{path}: folder has no train file (train.json, train.jsonl or train.csv)")
    return read


def read_file(path: Path | str, encoding: str = "utf-8", need_answers: bool = True,
              warnings: list[str] | None = None) -> list[Question]:
    path = Path(path)
    warnings = warnings if warnings is not None else []
    if path.suffix.lower() in (".csv", ".tsv"):
        table = read_table(path, encoding)
        rows = ((table.where(i), row) for i, row in enumerate(table.frame.to_dict("records")))
    else:
        text = decode_file(path, encoding)
        stripped = text.lstrip()
        document = _squad_document(stripped)
        if document is not None:
            rows = _squad_rows(path, document)
        elif stripped.startswith("["):
            rows = ((f"{path} item {n}", row) for n, row in json_array(path, stripped, ROW_EXAMPLE))
        else:
            rows = ((f"{path} line {n}", row) for n, row in json_lines(path, text, ROW_EXAMPLE))
    questions = [_question(row, where, need_answers, warnings) for where, row in rows]
    if not questions:
        raise UserError(f"{path}: no questions found; each row needs a context and a question"
                        + (" and its answers" if need_answers else ""))
    return questions


def _squad_document(text: str) -> dict | None:
    """The parsed file when it is one JSON object holding `data` (SQuAD's layout), else None."""
    if not text.startswith("{") or '"data"' not in text[:200]:
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    return document if isinstance(document, dict) else None


def _squad_rows(path: Path, document: dict):
    """Flat rows from SQuAD's nested layout, each located as data[i].paragraphs[j].qas[k]."""
    articles = document.get("data")
    if not isinstance(articles, list):
        raise UserError(f"{path}: field 'data' must be a list of articles with paragraphs (the SQuAD layout)")
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(article.get("paragraphs", []) if isinstance(article, dict) else []):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise UserError(f"{path} data[{i}].paragraphs[{j}]: needs 'context' and a list 'qas'")
            for k, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise UserError(f"{path} data[{i}].paragraphs[{j}].qas[{k}]: expected a JSON object")
                answers = [] if qa.get("is_impossible") else qa.get("answers", [])
                yield (f"{path} data[{i}].paragraphs[{j}].qas[{k}]",
                       {"context": paragraph.get("context"), "question": qa.get("question"), "answers": answers})


def _question(row: dict, where: str, need_answers: bool, warnings: list[str]) -> Question:
    context = _field(row, CONTEXT_KEYS, where, "the passage the answer is in")
    question = _field(row, QUESTION_KEYS, where, "the question")
    answers = [_placed(context, text, start, at, warnings) for text, start, at in _answer_cells(row, where, need_answers)]
    return Question(context, question, list(dict.fromkeys(answers)), where)


def _field(row: dict, keys: tuple[str, ...], where: str, what: str) -> str:
    key = next((k for k in keys if k in row), keys[0])
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: field '{key}' is missing or empty; give {what}")
    return value


def _answer_cells(row: dict, where: str, need_answers: bool) -> list[tuple[str, int | None, str]]:
    """(text, start or None, where) of each answer a row gives, in any of the layouts above."""
    if "answers" in row:
        answers = row["answers"]
        if isinstance(answers, dict):  # the datasets layout: parallel lists
            texts, starts = answers.get("text", []), answers.get("answer_start", [])
            if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
                raise UserError(f"{where}: field 'answers' needs lists 'text' and 'answer_start' of one length")
            return [(_answer_text(t, f"{where} answers.text[{n}]"), _start(s, f"{where} answers.answer_start[{n}]"),
                     f"{where} answers[{n}]") for n, (t, s) in enumerate(zip(texts, starts))]
        if not isinstance(answers, list):
            raise UserError(f"{where}: field 'answers' must be a list of {{\"text\", \"answer_start\"}} (empty: no answer)")
        cells = []
        for n, answer in enumerate(answers):
            if not isinstance(answer, dict) or "text" not in answer:
                raise UserError(f"{where}: answers[{n}] needs 'text' (and 'answer_start')")
            at = f"{where} answers[{n}]"
            cells.append((_answer_text(answer["text"], at), _start(answer.get("answer_start"), at), at))
        return cells
    if "answer" in row:
        text = row["answer"]
        if text is None or (isinstance(text, float) and text != text) or str(text).strip() == "":
            return []  # an empty answer cell: unanswerable
        return [(str(text), _start(row.get("answer_start"), where), where)]
    if need_answers:
        raise UserError(f"{where}: no field 'answers' or 'answer'; give the answer text (empty for an "
                        "unanswerable question)")
    return []


def _answer_text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: an answer's 'text' is missing or empty")
    return value


def _start(value, where: str) -> int | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    try:
        start = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: 'answer_start' {value!r} is not a character offset (an integer)") from None
    if start < 0:
        raise UserError(f"{where}: 'answer_start' {start} is negative")
    return start


def _placed(context: str, text: str, start: int | None, where: str, warnings: list[str]) -> Answer:
    """The answer at its given offset, or at the nearest occurrence of its text when the
    offset is off (or not given); an error when the text is not in the context at all."""
    if start is not None and context[start:start + len(text)] == text:
        return Answer(text, start)
    found = list(_occurrences(context, text))
    if not found:
        trimmed = text.strip()
        if trimmed != text and trimmed:
            return _placed(context, trimmed, start, where, warnings)
        raise UserError(f"{where}: the answer {_short(text)} is not in the context; fix the answer or its context")
    nearest = min(found, key=lambda i: abs(i - (start or 0)))
    if start is not None:
        warnings.append(f"{where}: answer_start {start} does not point at {_short(text)} (the context there reads "
                        f"{_short(context[start:start + len(text)])}); moved to {nearest}, its nearest occurrence")
    return Answer(text, nearest)


def _occurrences(context: str, text: str):
    at = context.find(text)
    while at != -1:
        yield at
        at = context.find(text, at + 1)


def _short(text: str, width: int = 40) -> str:
    return repr(text if len(text) <= width else text[:width] + "...")


# ---- the built-in set ------------------------------------------------------------------------
UNANSWERABLE_SHARE = 1 / 3  # of the sentences, one also gets a question it does not answer


def duie_questions(seed: int = 0) -> list[Question]:
    """Questions over the DuIE sentences (data/relations.duie), written from their triples:
    for a subject and predicate, "{subject}的{predicate}是谁？" (是什么？ when the object is not a
    person), answered by every object the sentence gives for them. A third of the sentences
    also get an unanswerable question: the same subject with a predicate that subjects of its
    type have elsewhere in DuIE but that this sentence states for it nowhere (DuIE's annotation
    is not exhaustive, so a few of these may in truth be answerable)."""
    from tunesmith.data import relations

    sentences = relations.duie()
    predicates: dict[str, set[str]] = {}  # subject type -> predicates seen with it
    object_type: dict[str, str] = {}  # predicate -> the type of its objects
    for sentence in sentences:
        for pair in sentence.pairs:
            if not relations.negative(pair.relation):
                predicates.setdefault(pair.head.type, set()).add(pair.relation)
                object_type.setdefault(pair.relation, pair.tail.type)
    rng = random.Random(seed)
    questions = []
    for number, sentence in enumerate(sentences, start=1):
        asked: dict[tuple, list] = {}  # (subject, predicate) -> its objects
        for pair in sentence.pairs:
            if not relations.negative(pair.relation):
                asked.setdefault((pair.head, pair.relation), []).append(pair.tail)
        where = f"duie sentence {number}"
        for (head, relation), tails in asked.items():
            subject = sentence.text[head.start:head.end]
            answers = list(dict.fromkeys(Answer(sentence.text[t.start:t.end], t.start) for t in tails))
            questions.append(Question(sentence.text, _asked(subject, relation, tails[0].type), answers, where))
        heads = list(dict.fromkeys(head for head, _ in asked))
        if heads and rng.random() < UNANSWERABLE_SHARE:
            head = rng.choice(heads)
            stated = {relation for h, relation in asked if h == head}
            unstated = sorted(predicates.get(head.type, set()) - stated)
            if unstated:
                relation = rng.choice(unstated)
                subject = sentence.text[head.start:head.end]
                questions.append(Question(sentence.text, _asked(subject, relation, object_type[relation]), [], where))
    return questions


def _asked(subject: str, predicate: str, object_type: str | None) -> str:
    return f"{subject}的{predicate}是{'谁' if object_type == '人物' else '什么'}？"
