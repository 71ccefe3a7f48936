"""The knowledge base: question/answer pairs, with an optional intent per pair.

CSV, TSV or JSONL with a `question` and an `answer` column (also `q`/`a`, `prompt`/`response`,
`instruction`/`output`: the column names the sentence-embedding task reads, since the retriever
trains on this file as it is), and optionally `intent` (the answer is then that intent's
template) and `id`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tunesmith.errors import UserError

from tunesmith.tasks.sentence_embedding import POSITIVE_COLUMNS as ANSWER
from tunesmith.tasks.sentence_embedding import QUERY_COLUMNS as QUESTION


@dataclass
class Entry:
    id: str
    question: str
    answer: str
    intent: str | None = None


def read_kb(path: str) -> list[Entry]:
    from tunesmith.data.sources import read_source

    table = read_source(path)["all"]
    columns = {str(c).lower(): c for c in table.frame.columns}
    question = next((columns[c] for c in QUESTION if c in columns), None)
    answer = next((columns[c] for c in ANSWER if c in columns), None)
    if question is None or answer is None:
        raise UserError(f"--kb {path}: needs a question and an answer column (e.g. question, answer); "
                        f"columns are: {', '.join(map(str, table.frame.columns))}")
    entries = []
    for i, row in enumerate(table.frame.to_dict("records")):
        q, a = str(row[question] or "").strip(), str(row[answer] or "").strip()
        if not q or not a:
            raise UserError(f"--kb {table.where(i)}: empty question or answer")
        intent = str(row[columns["intent"]]).strip() if "intent" in columns and str(row[columns["intent"]]).strip() else None
        entries.append(Entry(str(row[columns["id"]]) if "id" in columns else str(i), q, a, intent))
    if not entries:
        raise UserError(f"--kb {path}: no rows")
    return entries


def to_rows(entries: list[Entry]) -> list[dict]:
    return [asdict(e) for e in entries]


def from_rows(rows: list[dict]) -> list[Entry]:
    return [Entry(**row) for row in rows]


def templates(entries: list[Entry]) -> dict[str, Entry]:
    """Each intent's template: the first entry written for it."""
    out: dict[str, Entry] = {}
    for entry in entries:
        if entry.intent and entry.intent not in out:
            out[entry.intent] = entry
    return out
