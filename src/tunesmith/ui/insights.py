"""What a run's page computes on demand: the most confident wrong predictions on its test split,
and the try-it answer. Predictors are loaded once per run and kept (a few at most)."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from tunesmith.errors import UserError
from tunesmith.inference import Predictor
from tunesmith.runs import Run, open_finished

KEPT = 3  # predictors held in memory: a page or two being compared, not every run
ERROR_ROWS = 20  # wrong predictions listed
MAX_TEST = 5000  # test texts scored for the list (the first ones; the page says so when cut)


class Predictors:
    """Finished runs' predictors, loaded on first use; the least recently used is dropped."""

    def __init__(self, kept: int = KEPT):
        self.kept, self.loaded, self.lock = kept, OrderedDict(), threading.Lock()
        # One model loads at a time: a page asking for many runs at once would otherwise hold
        # all of them in memory together before the cache could drop any.
        self.loading = threading.Lock()
        self.errors: dict[tuple, dict] = {}  # (run path, metrics.json mtime) -> the computed list

    def get(self, run: Run) -> Predictor:
        key = str(run.path)
        with self.lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
                return self.loaded[key]
        with self.loading:
            with self.lock:
                if key in self.loaded:  # loaded while this one waited
                    return self.loaded[key]
            predictor = Predictor.from_run(open_finished(str(run.path)))
        with self.lock:
            self.loaded[key] = predictor
            while len(self.loaded) > self.kept:
                self.loaded.popitem(last=False)
        return predictor


def try_it(predictors: Predictors, run: Run, text: str, text_pair: str | None = None) -> dict:
    """The run's answer for one input, in the shape `serve` answers it."""
    predictor = predictors.get(run)
    task = predictor.task
    if task.serves_images:
        raise UserError("this run reads images; try it with `tunesmith predict` or `serve`")
    pairs = bool(run.settings().text_pair_col)  # as `serve` decides it
    value = {"text": text, "text_pair": text_pair or ""} if pairs else text
    row = task.output_rows(predictor.predict([task.serve_input(value, pairs)]))[0]
    return task.serve_output(value, row, predictor.labels, 3)


def confident_errors(predictors: Predictors, run: Run, limit: int = ERROR_ROWS) -> dict:
    """The test split's most confident wrong predictions (classification runs)."""
    if not run.finished:
        raise UserError("the run has not finished; its test split is scored at the end")
    key = (str(run.path), run.metrics_file.stat().st_mtime)
    if key in predictors.errors:
        return predictors.errors[key]
    predictor = predictors.get(run)
    if not predictor.task.class_probabilities:
        return {"available": False, "reason": f"{predictor.task.name} runs have no single predicted class"}
    test = run.split("test")
    texts, gold = list(test.texts[:MAX_TEST]), list(test.labels[:MAX_TEST])
    probs = np.asarray(predictor.predict(texts))
    labels = predictor.labels
    predicted, confidence = probs.argmax(axis=1), probs.max(axis=1)
    wrong = [i for i in range(len(texts)) if labels[predicted[i]] != gold[i]]
    wrong.sort(key=lambda i: -confidence[i])
    rows = [{"text": " ‖ ".join(texts[i]) if isinstance(texts[i], tuple) else texts[i], "label": gold[i],
             "predicted": labels[predicted[i]], "confidence": round(float(confidence[i]), 4)} for i in wrong[:limit]]
    found = {"available": True, "rows": rows, "wrong": len(wrong), "scored": len(texts), "test_size": len(test.texts)}
    predictors.errors[key] = found
    return found
