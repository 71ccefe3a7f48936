"""`tunesmith eval RUN [DATA]`: metrics and report of a finished run on a test set.

Without DATA it scores the run's own held-out test split (kept in the run folder, never
trained on) and refreshes the run's metrics.json and report.html. With DATA it writes
them to RUN/eval/<data name>/, leaving the run's own files as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.evaluate import report
from tunesmith.inference import Predictor
from tunesmith.io import write_json, write_text
from tunesmith.runs import open_finished
from tunesmith.tasks import TASKS


def evaluate(run_path: str, data: str | None = None, text_col=None, label_col=None, encoding="utf-8", out=print) -> dict:
    run = open_finished(run_path)
    cfg = run.settings()
    labels = run.labels()
    task = TASKS[cfg.task]
    if data is None:
        examples = run.split("test")
        target = run.path
    else:
        examples = task.read_labeled(data, cfg, labels, text_col=text_col, label_col=label_col, encoding=encoding)
        target = run.path / "eval" / Path(data).stem

    predictor = Predictor.from_run(run)
    metrics = task.metrics(examples.labels, predictor.predict(examples.texts), labels)
    if task.generative:  # generative tasks: generated answers vs reference answers
        metrics.update(task.answer_metrics(predictor.model, predictor.tokenizer, examples.texts))

    previous = json.loads(run.metrics_file.read_text()) if run.metrics_file.is_file() else {}
    merged = {**previous, "test": metrics} if data is None else {"test": metrics, "data": data,
                                                                 "baseline": None, "run": str(run.path)}
    write_text(target / "report.html", report.render(f"tunesmith eval {run.path.name}", run.config(), merged,
                                                      run.history() if data is None else [], labels))
    write_json(target / "metrics.json", merged)
    out(f"{len(examples)} examples: {task.summary(metrics)}")
    out(f"wrote {target / 'metrics.json'} and {target / 'report.html'}")
    return metrics
