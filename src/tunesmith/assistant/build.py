"""Building an assistant folder from a knowledge base and trained runs.

    assistant.json   settings and calibrated thresholds (plain JSON)
    kb.jsonl         the knowledge base as read
    encoder/         the fine-tuned bi-encoder (safetensors)
    vectors.npy      the answers' vectors; index.faiss, the FAISS index over them
    scope/           with an intent run: the out-of-scope detector (scope.py)
    calibration.json the coverage/accuracy curves the thresholds were chosen on, and the
                     retrieval scores before and after fine-tuning on held-out pairs
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunesmith.assistant import calibration, scope
from tunesmith.assistant.encoder import BiEncoder, retrieval_metrics
from tunesmith.assistant.index import VectorIndex
from tunesmith.assistant.kb import read_kb, to_rows
from tunesmith.errors import UserError

HOLDOUT = 0.1  # knowledge-base pairs held out to calibrate retrieval and measure the fine-tuning
MIN_HOLDOUT_PAIRS = 20  # below this many pairs all of them train, and the default threshold is used
DEFAULT_SIMILARITY = 0.6  # retrieval threshold when there is nothing to calibrate it on
K = 5


def build(kb_path: str, folder: str, intents_run: str | None = None, generator_run: str | None = None,
          model: str | None = None, epochs: int = 1, lr: float = 2e-5, target: float = calibration.TARGET_ACCURACY,
          max_length: int = 128, max_new_tokens: int = 96, seed: int = 0, keep_in_scope: float = scope.KEEP_IN_SCOPE,
          log=print) -> Path:
    from tunesmith import models
    from tunesmith.inference import Predictor
    from tunesmith.io import atomic_dir, write_json
    from tunesmith.runs import open_finished

    if not 0 < keep_in_scope <= 1:
        raise UserError(f"--keep-in-scope {keep_in_scope}: a share of questions, above 0 and at most 1 (e.g. 0.95)")
    entries = read_kb(kb_path)
    intents = _intents(intents_run, open_finished, Predictor)
    if generator_run and not Predictor.from_run(open_finished(generator_run)).task.generative:
        raise UserError(f"--generator {generator_run}: not a causal-lm or preference run; it cannot write answers")
    base = model or (open_finished(intents_run).settings().resolved_model() if intents_run else "minilm")
    encoder = BiEncoder(models.resolve(base), max_length)

    rng = random.Random(seed)
    order = list(range(len(entries)))
    rng.shuffle(order)
    held = order[:int(HOLDOUT * len(entries))] if len(entries) >= MIN_HOLDOUT_PAIRS / HOLDOUT else []
    held_set = set(held)
    train = [(entries[i].question, entries[i].answer) for i in order if i not in held_set]
    answers = [e.answer for e in entries]
    scores: dict = {}
    if held:
        scores["before"] = _retrieval(encoder, entries, held, answers)
        log(f"retrieval before fine-tuning, {len(held)} held-out questions: " + _line(scores["before"]))
    encoder.fine_tune(train, epochs=epochs, lr=lr, seed=seed, log=log)
    index = VectorIndex(encoder.embed(answers))
    settings = {"kb": str(kb_path), "intents_run": intents_run, "generator_run": generator_run, "model": base,
                "max_length": max_length, "max_new_tokens": max_new_tokens, "target_accuracy": target}
    curves: dict = {"retrieval": [], "intent": [], "scope": []}
    if held:
        scores["after"] = _retrieval(encoder, entries, held, answers, index)
        log("retrieval after fine-tuning: " + _line(scores["after"]))
        curves["retrieval"] = calibration.curve(scores["after"]["top_similarity"], scores["after"]["top_correct"])
        settings["retrieval_threshold"] = calibration.choose(curves["retrieval"], target)
    else:
        settings["retrieval_threshold"] = DEFAULT_SIMILARITY
        log(f"{len(entries)} pairs: too few to hold some out; retrieval threshold {DEFAULT_SIMILARITY} (not calibrated)")
    detector = None
    if intents is not None:
        curves["intent"] = calibration.curve(intents.confidence, intents.correct)
        settings["intent_threshold"] = calibration.choose(curves["intent"], target)
        detector, curves["scope"] = scope.fit(encoder.embed, intents.train_texts, intents.val_texts,
                                              intents.confidence, keep_in_scope, seed)
        settings["scope_threshold"], settings["keep_in_scope"] = detector.threshold, keep_in_scope
        log(f"out-of-scope detector: threshold {detector.threshold:.3f} keeps {keep_in_scope:.0%} of the intent run's "
            "validation questions")
    else:
        settings["intent_threshold"] = 1.01  # no intent run: the template route is never taken
    target_dir = Path(folder)
    with atomic_dir(target_dir) as tmp:
        write_json(tmp / "assistant.json", settings)
        (tmp / "kb.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in to_rows(entries)),
                                      encoding="utf-8")
        encoder.save(tmp / "encoder")
        index.save(tmp)
        if detector is not None:
            detector.save(tmp)
        write_json(tmp / "calibration.json", {"curves": curves, "retrieval": {k: {m: v for m, v in s.items()
                                                                                    if not m.startswith("top_")}
                                                                                for k, s in scores.items()}})
    log(f"wrote {target_dir}: intent threshold {settings['intent_threshold']:.3f}, retrieval threshold "
        f"{settings['retrieval_threshold']:.3f} (each the lowest reaching {target:.0%} accuracy on held-out data)")
    return target_dir


@dataclass
class IntentSplits:
    confidence: np.ndarray  # the intent run's top probability on each validation question
    correct: list[bool]  # whether its top intent is the true one
    val_texts: list[str]
    train_texts: list[str]


def _intents(intents_run, open_finished, Predictor) -> IntentSplits | None:
    """The intent run on its own validation split (and its training questions), or None."""
    if intents_run is None:
        return None
    run = open_finished(intents_run)
    if run.settings().task != "text-classification":
        raise UserError(f"--intents {intents_run}: a {run.settings().task} run; the intent classifier must be a "
                        "text-classification run")
    predictor = Predictor.from_run(run)
    val = run.split("val")
    probs = np.asarray(predictor.predict(val.texts))
    predicted = [predictor.labels[i] for i in probs.argmax(1)]
    return IntentSplits(probs.max(1), [p == y for p, y in zip(predicted, val.labels)], list(val.texts),
                        list(run.split("train").texts))


def _retrieval(encoder, entries, held: list[int], answers: list[str], index=None) -> dict:
    index = index or VectorIndex(encoder.embed(answers))
    sims, rows = index.search(encoder.embed([entries[i].question for i in held]), k=K)
    correct = [{j for j, a in enumerate(answers) if a == entries[i].answer} for i in held]
    out = retrieval_metrics(rows, correct)
    out["top_similarity"] = sims[:, 0].tolist()
    out["top_correct"] = [int(r[0]) in c for r, c in zip(rows, correct)]
    return out


def _line(scores: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in scores.items() if not k.startswith("top_"))
