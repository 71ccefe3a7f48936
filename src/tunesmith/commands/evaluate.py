"""`tunesmith eval RUN [DATA]`: metrics and report of a finished run on a test set.

Without DATA it scores the run's own held-out test split (kept in the run folder, never
trained on) and refreshes the run's metrics.json and report.html. With DATA it writes
them to RUN/eval/<data name>/, leaving the run's own files as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional, training_field
from tunesmith.errors import UserError
from tunesmith.evaluate import ranking, report
from tunesmith.inference import Predictor
from tunesmith.io import write_json, write_text
from tunesmith.runs import open_finished
from tunesmith.tasks import TASKS


class EvalArgs(BaseModel):
    """`tunesmith eval RUN [DATA]`."""

    run: str = Field(description="run folder", json_schema_extra=positional())
    data: Optional[str] = Field(None, description="test data (default: the run's own held-out test split)",
                                json_schema_extra=positional())
    text_col: Optional[str] = training_field("text_col")
    label_col: Optional[str] = training_field("label_col")
    encoding: str = training_field("encoding")
    rank: bool = Field(False, description="pair runs: NDCG@k, MRR and recall@k per query (first text), against "
                       "popularity and the untuned similarity")
    positive_label: Optional[str] = Field(None, description="with --rank on a pair classifier: the label that "
                                          "means relevant")


def evaluate(args: EvalArgs, out=print) -> dict:
    run_path, data, rank = args.run, args.data, args.rank
    run = open_finished(run_path)
    cfg = run.settings()
    labels = run.labels()
    task = TASKS[cfg.task]
    if rank and not cfg.text_pair_col:
        raise UserError(f"--rank: {run_path} is not a pair run; ranking needs (query or profile, candidate) rows: "
                        "train with --task text-pair-classification or regression on two text columns")
    if data is None:
        examples = run.split("test")
        target = run.path
    else:
        examples = task.read_labeled(data, cfg, labels, text_col=args.text_col, label_col=args.label_col,
                                      encoding=args.encoding)
        target = run.path / "eval" / Path(data).stem

    predictor = Predictor.from_run(run)
    outputs = predictor.predict(examples.texts)
    metrics = task.metrics(examples.labels, outputs, labels)
    if rank:
        metrics["ranking"] = _ranking(run, cfg, examples, outputs, labels, args.positive_label)
        out(ranking.table(metrics["ranking"]))
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


def _ranking(run, cfg, examples, outputs, labels: list[str], positive: str | None) -> dict:
    """NDCG, MRR and recall per query for the model, popularity and the untuned similarity."""
    from tunesmith import models
    from tunesmith.evaluate.features import load_encoder

    queries, candidates = [q for q, _ in examples.texts], [c for _, c in examples.texts]
    outputs = np.asarray(outputs)
    name = None if outputs.ndim == 1 else ranking.positive_label(labels, positive)  # None: regression scores
    scores = outputs if name is None else outputs[:, labels.index(name)]
    train = run.split("train")
    popularity = ranking.popularity_scores([c for _, c in train.texts], ranking.relevance(train.labels, name), candidates)
    source = models.resolve(cfg.resolved_model())
    similarity = ranking.similarity_scores(load_encoder(source), models.load_tokenizer(source), queries, candidates,
                                           cfg.resolved_max_length())
    relevance = ranking.relevance(examples.labels, name)
    return {"model": ranking.ranking_metrics(queries, relevance, scores),
            "popularity": ranking.ranking_metrics(queries, relevance, popularity),
            "untuned similarity": ranking.ranking_metrics(queries, relevance, similarity)}
