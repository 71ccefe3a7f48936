"""Read a table of examples from a file, a built-in offline dataset or a `datasets` name.

Every reader returns a `Table`: the raw columns as strings plus how to name a row in an
error message ("row 17" in a CSV, "line 17" in a JSONL file), so bad input can be reported
as one line that points at the exact place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tunesmith.data import builtin
from tunesmith.errors import UserError
from tunesmith.io import lines

TABLE_SUFFIXES = {".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt"}


@dataclass
class Table:
    frame: pd.DataFrame  # every cell a string; missing values are ""
    source: str  # what the user named: a path or a dataset name
    row_word: str = "row"  # "row" (1-based data row, header not counted) or "line"

    def where(self, index: int) -> str:
        """Human locator of the row at positional `index`."""
        return f"{self.source} {self.row_word} {index + 1}"


def read_source(name: str, encoding: str = "utf-8") -> dict[str, Table]:
    """Read `name` into named splits: {"all": table} for one file, or the dataset's own splits."""
    if name in builtin.DATASETS:
        return {"all": builtin.load(name)}
    path = Path(name)
    if path.suffix.lower() in TABLE_SUFFIXES or path.exists():
        return {"all": read_table(path, encoding)}
    return _read_hf_dataset(name)


def read_table(path: Path, encoding: str = "utf-8") -> Table:
    if not path.exists():
        raise UserError(f"{path}: file not found; check the path")
    if path.is_dir():
        raise UserError(f"{path}: is a folder; give a CSV, TSV, JSONL or Parquet file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    text = decode_file(path, encoding)
    if not text.strip():
        raise UserError(f"{path}: file is empty; it needs a header row and at least two labelled rows")
    if suffix in (".jsonl", ".json"):
        return _read_jsonl(path, text)
    if suffix == ".txt":
        texts = [line for line in lines(text) if line.strip()]
        return Table(pd.DataFrame({"text": texts}), str(path), "line")
    sep = "\t" if suffix == ".tsv" else ","
    return _read_delimited(path, text, sep)


def decode_file(path: Path, encoding: str) -> str:
    """The file's text; a missing file or a wrong encoding is one error naming it."""
    if not path.is_file():
        raise UserError(f"{path}: file not found; check the path")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
    except LookupError:
        raise UserError(f"--encoding {encoding!r}: unknown encoding; try utf-8 or latin-1") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path} line {line}: not valid {encoding} (byte 0x{raw[exc.start]:02x}); "
            f"re-save the file as UTF-8 or pass --encoding latin-1"
        ) from None


def _read_delimited(path: Path, text: str, sep: str) -> Table:
    import io

    try:
        # dtype=str and no NA parsing: the text "NA" stays text, an empty cell stays "".
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, quoting=3 if sep == "\t" else 0)
    except pd.errors.ParserError as exc:
        raise UserError(f"{path}: cannot parse as {'TSV' if sep == chr(9) else 'CSV'} ({_first_line(exc)}); check quoting and the delimiter") from None
    except pd.errors.EmptyDataError:
        raise UserError(f"{path}: file is empty; it needs a header row and at least two labelled rows") from None
    if frame.empty:
        raise UserError(f"{path}: has a header but no rows; add labelled rows")
    return Table(frame, str(path), "row")


def _read_jsonl(path: Path, text: str) -> Table:
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of objects is accepted too
        try:
            rows = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        return _rows_to_table(path, rows, "row")
    rows = [row for _number, row in json_lines(path, text, '{"text": ..., "label": ...}')]
    return _rows_to_table(path, rows, "line")


def json_array(path: Path, text: str, example: str):
    """(item number, object) for each item of a JSON array text; an item that is not a JSON
    object is one error naming it, with `example` showing what an item should hold."""
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise UserError(f"{path} item {number}: expected a JSON object like {example}")
        yield number, row


def json_lines(path: Path, text: str, example: str):
    """(line number, object) for each non-blank line of a JSONL text; a line that is not a
    JSON object is one error naming it, with `example` showing what a line should hold."""
    for number, line in enumerate(lines(text), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number}: not valid JSON ({exc.msg}); each line must be one object") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {number}: expected a JSON object like {example}")
        yield number, row


def _rows_to_table(path: Path, rows: list, row_word: str) -> Table:
    if not rows:
        raise UserError(f"{path}: no rows; add labelled examples")
    frame = pd.DataFrame(rows)
    return Table(_as_strings(frame), str(path), row_word)


def _read_parquet(path: Path) -> Table:
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise UserError(f"{path}: cannot read as Parquet ({_first_line(exc)})") from None
    if frame.empty:
        raise UserError(f"{path}: has no rows; add labelled rows")
    return Table(_as_strings(frame), str(path), "row")


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    def cell(value: object) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return ""
        if isinstance(value, (list, tuple, dict)):
            return json.dumps(list(value) if isinstance(value, tuple) else value, ensure_ascii=False)  # label lists
        if hasattr(value, "tolist"):  # numpy arrays from Parquet / datasets list columns
            return json.dumps(value.tolist(), ensure_ascii=False)
        if isinstance(value, float) and value.is_integer():
            return str(int(value))  # 1.0 -> "1": pandas turns int columns with gaps into floats
        return str(value)

    return frame.apply(lambda col: col.map(cell)).astype(str)


def _read_hf_dataset(name: str) -> dict[str, Table]:
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"--data {name!r}: not a file, not a built-in dataset ({', '.join(builtin.DATASETS)}); "
            "to use a Hugging Face dataset name: pip install 'tunesmith[hub]'"
        ) from None
    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:
        raise UserError(
            f"--data {name!r}: not a file, not a built-in dataset ({', '.join(builtin.DATASETS)}), and the "
            f"Hugging Face Hub could not provide it ({_first_line(exc)})"
        ) from None
    tables = {}
    for split, ds in loaded.items():
        frame = ds.to_pandas()
        for column, feature in ds.features.items():
            names = getattr(feature, "names", None)  # ClassLabel: ids -> names
            if names:
                frame[column] = [names[i] if i is not None and i >= 0 else "" for i in frame[column]]
        key = {"validation": "val", "dev": "val"}.get(split, split)
        tables[key] = Table(_as_strings(frame), f"{name}[{split}]", "row")
    return tables


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
