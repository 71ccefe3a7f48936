"""`tunesmith predict RUN INPUT -o OUTPUT`: batch predictions written beside the input rows
(label + per-class scores for classifiers, entities with character offsets for NER)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.inference import Predictor
from tunesmith.runs import open_finished


def predict(run_path: str, input_path: str, output: str, text_col=None, encoding="utf-8", batch_size=32, out=print) -> Path:
    run = open_finished(run_path)
    output_path = Path(output)
    if output_path.suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json"):
        raise UserError(f"-o {output}: give an output file ending in .csv, .tsv or .jsonl")
    predictor = Predictor.from_run(run)
    rows, inputs = predictor.task.read_inputs(input_path, encoding, text_col)
    outputs = predictor.predict(inputs, batch_size=batch_size)
    predictor.task.write_predictions(output_path, rows, outputs, predictor.labels)
    out(f"wrote {len(inputs)} predictions to {output_path}")
    return output_path
