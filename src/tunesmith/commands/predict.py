"""`tunesmith predict RUN INPUT -o OUTPUT`: batch predictions written beside the input rows
(label + per-class scores for classifiers, a score for regression, labels over their tuned
thresholds for multi-label, entities with character offsets for NER).

`--rank` is the recommendation helper for pair runs (a user profile or query beside
candidate item texts): rows are grouped by their first text and sorted best first within
each group, with a `rank` column (1 = best). The score is the regression output, or the
probability of the positive class of a pair classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import numpy as np
from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional, training_field
from tunesmith.errors import UserError
from tunesmith.inference import Predictor
from tunesmith.runs import open_finished
from tunesmith.tasks import TASKS

class PredictArgs(BaseModel):
    """`tunesmith predict RUN INPUT -o OUTPUT`."""

    run: str = Field(description="run folder", json_schema_extra=positional())
    input: str = Field(description="CSV/TSV/JSONL/Parquet/TXT file of texts (pairs: two text columns; NER: also "
                       "CoNLL)", json_schema_extra=positional())
    output: str = Field(description="output file (.csv, .tsv or .jsonl; .npy for sentence-embedding vectors)", json_schema_extra={"flags": ["-o", "--output"]})
    text_col: Optional[str] = training_field("text_col")
    encoding: str = training_field("encoding")
    batch_size: int = Field(32, gt=0, description="texts per inference batch")
    rank: bool = Field(False, description="pair runs: sort candidates best first within each query / user profile, "
                       "with a rank column")
    positive_label: Optional[str] = Field(None, description="with --rank on a pair classifier: the label that means "
                                          "a good match")
    backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto (a quantised run's own backend, else torch), torch, or onnx: the run's ONNX export "
        "under ONNX Runtime (`tunesmith export` makes it)")


def predict(args: PredictArgs, out=print) -> Path:
    run_path, output, rank = args.run, args.output, args.rank
    run = open_finished(run_path)
    output_path = Path(output)
    cfg = run.settings()
    suffixes = TASKS[cfg.task].output_suffixes
    if output_path.suffix.lower() not in suffixes:
        raise UserError(f"-o {output}: give an output file ending in {', '.join(suffixes[:-1])} or {suffixes[-1]}")
    if rank and not cfg.text_pair_col:
        raise UserError(f"--rank: {run_path} is not a pair run; train with --task text-pair-classification or "
                        "regression on two text columns (query or profile, candidate)")
    predictor = Predictor.from_run(run, args.backend)
    rows, inputs = predictor.task.read_inputs(args.input, args.encoding, args.text_col, cfg.text_pair_col)
    outputs = predictor.predict(inputs, batch_size=args.batch_size)
    if rank:
        rows, outputs = _ranked(rows, inputs, outputs, predictor.labels, args.positive_label)
    predictor.task.write_predictions(output_path, rows, outputs, predictor.labels)
    out(f"wrote {len(inputs)} predictions to {output_path}" + (" (ranked within each query)" if rank else ""))
    return output_path


def _ranked(rows, inputs, outputs, labels, positive_label: str | None):
    from tunesmith.evaluate.ranking import positive_label as find_positive

    outputs = np.asarray(outputs)
    score = outputs if outputs.ndim == 1 else outputs[:, labels.index(find_positive(labels, positive_label))]
    order, ranks = [], {}
    groups: dict[str, list[int]] = {}
    for i, (query, _candidate) in enumerate(inputs):
        groups.setdefault(query, []).append(i)
    for members in groups.values():  # groups in order of first appearance
        for position, i in enumerate(sorted(members, key=lambda i: -score[i]), start=1):
            order.append(i)
            ranks[i] = position
    return [{**rows[i], "rank": ranks[i]} for i in order], outputs[order]
