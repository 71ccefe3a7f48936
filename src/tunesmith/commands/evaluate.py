"""`tunesmith eval RUN [DATA]`: metrics and report of a finished run on a test set.

Without DATA it scores the run's own held-out test split (kept in the run folder, never
trained on) and refreshes the run's metrics.json and report.html. With DATA it writes
them to RUN/eval/<data name>/, leaving the run's own files as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.data.labeled import LABEL_COLUMNS, TEXT_COLUMNS, pick_column, to_examples
from tunesmith.data.sources import read_source
from tunesmith.errors import UserError
from tunesmith.evaluate import report
from tunesmith.inference import Predictor
from tunesmith.io import write_json, write_text
from tunesmith.runs import open_finished
from tunesmith.tasks import TASKS


def evaluate(run_path: str, data: str | None = None, text_col=None, label_col=None, encoding="utf-8", out=print) -> dict:
    run = open_finished(run_path)
    cfg = run.config()
    labels = run.labels()
    if data is None:
        source, text_col, label_col = str(run.data_dir / "test.jsonl"), "text", "label"
        target = run.path
    else:
        source = data
        target = run.path / "eval" / Path(data).stem
    tables = read_source(source, encoding)
    table = tables.get("all") or tables.get("test")  # a file, or a dataset's test split
    if table is None:
        raise UserError(f"{source}: no test split found")
    text_col = pick_column(table, text_col or cfg.get("text_col"), TEXT_COLUMNS, "text", "--text-col")
    label_col = pick_column(table, label_col or cfg.get("label_col"), LABEL_COLUMNS, "labels", "--label-col")
    examples = to_examples(table, text_col, label_col)
    unseen = sorted(set(examples.labels) - set(labels))
    if unseen:
        raise UserError(f"{source}: labels the run was not trained on: {', '.join(map(repr, unseen[:5]))}")

    predictor = Predictor.from_run(run)
    probs = predictor.predict(examples.texts)
    y = [labels.index(label) for label in examples.labels]
    metrics = TASKS[cfg["task"]].metrics(y, probs, labels)

    previous = json.loads(run.metrics_file.read_text()) if run.metrics_file.is_file() else {}
    merged = {**previous, "test": metrics} if data is None else {"test": metrics, "data": data,
                                                                 "baseline": None, "run": str(run.path)}
    write_text(target / "report.html", report.render(f"tunesmith eval {run.path.name}", cfg, merged,
                                                      run.history() if data is None else [], labels))
    write_json(target / "metrics.json", merged)
    out(f"{len(examples)} examples: accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}")
    out(f"wrote {target / 'metrics.json'} and {target / 'report.html'}")
    return metrics
