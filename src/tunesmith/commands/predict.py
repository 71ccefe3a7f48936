"""`tunesmith predict RUN INPUT -o OUTPUT`: batch predictions (label + per-class scores)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.data.labeled import TEXT_COLUMNS, pick_column
from tunesmith.data.sources import read_source
from tunesmith.errors import UserError
from tunesmith.inference import Predictor, write_predictions
from tunesmith.runs import open_finished


def predict(run_path: str, input_path: str, output: str, text_col=None, encoding="utf-8", batch_size=32, out=print) -> Path:
    run = open_finished(run_path)
    output_path = Path(output)
    if output_path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json"):
        raise UserError(f"-o {output}: give an output file ending in .csv, .tsv or .jsonl")
    table = read_source(input_path, encoding).get("all")
    if table is None:
        raise UserError(f"{input_path}: give a CSV, TSV, JSONL, Parquet or text file")
    column = pick_column(table, text_col, TEXT_COLUMNS, "text", "--text-col")
    texts = table.frame[column].tolist()
    predictor = Predictor.from_run(run)
    probs = predictor.predict(texts, batch_size=batch_size)
    write_predictions(output_path, table.frame.to_dict("records"), probs, predictor.labels)
    out(f"wrote {len(texts)} predictions to {output_path}")
    return output_path
