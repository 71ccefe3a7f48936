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
from typing import Optional

import numpy as np
from pydantic import BaseModel, Field

from tunesmith.assistant import calibration, scope
from tunesmith.assistant.encoder import BiEncoder, retrieval_metrics
from tunesmith.assistant.index import VectorIndex
from tunesmith.assistant.kb import read_kb, to_rows
from tunesmith.errors import UserError

HOLDOUT = 0.1  # knowledge-base pairs held out to calibrate retrieval and measure the fine-tuning
MIN_HOLDOUT_PAIRS = 20  # below this many pairs all of them train, and the default threshold is used
DEFAULT_SIMILARITY = 0.6  # retrieval threshold when there is nothing to calibrate it on
K = 5


class BuildArgs(BaseModel):
    """`tunesmith assistant build --kb FAQ.csv --out FOLDER`."""

    kb: str = Field(description="CSV/TSV/JSONL of question and answer (optional intent: its template)")
    out: str = Field(description="folder for the assistant")
    intents: Optional[str] = Field(None, description="finished text-classification run that names each question's "
                                   "intent")
    generator: Optional[str] = Field(None, description="finished causal-lm run that writes answers from retrieved "
                                     "passages")
    model: Optional[str] = Field(None, description="retriever's base model (default: the intent run's, else minilm)")
    epochs: int = Field(1, gt=0, description="bi-encoder fine-tuning passes")
    lr: float = Field(2e-5, gt=0, description="bi-encoder learning rate")
    target: float = Field(calibration.TARGET_ACCURACY, gt=0, le=1, description="accuracy the thresholds must reach "
                          "on held-out data (coverage is traded for it)")
    keep_in_scope: float = Field(scope.KEEP_IN_SCOPE, gt=0, le=1, description="share of the intent run's validation "
                                 "questions the out-of-scope check lets through; lower catches more out-of-scope "
                                 "questions and answers fewer in-scope ones")
    max_length: int = Field(128, gt=1, description="longest question or answer the retriever reads, in tokens")
    max_new_tokens: int = Field(96, gt=0, description="with --generator: longest generated answer")
    seed: int = Field(0, description="seed of the held-out split and the fine-tuning")


def build(args: BuildArgs, log=print) -> Path:
    from tunesmith import models
    from tunesmith.inference import Predictor
    from tunesmith.runs import open_finished

    entries = read_kb(args.kb)
    intents = _intents(args.intents, open_finished, Predictor)
    if args.generator and not Predictor.from_run(open_finished(args.generator)).task.generative:
        raise UserError(f"--generator {args.generator}: not a causal-lm or preference run; it cannot write answers")
    base = args.model or (open_finished(args.intents).settings().resolved_model() if args.intents else "minilm")
    encoder = BiEncoder(models.resolve(base), args.max_length)

    rng = random.Random(args.seed)
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
    encoder.fine_tune(train, epochs=args.epochs, lr=args.lr, seed=args.seed, log=log)
    index = VectorIndex(encoder.embed(answers))
    settings = {"kb": str(args.kb), "intents_run": args.intents, "generator_run": args.generator, "model": base,
                "max_length": args.max_length, "max_new_tokens": args.max_new_tokens, "target_accuracy": args.target}
    curves: dict = {"retrieval": [], "intent": [], "scope": []}
    if held:
        scores["after"] = _retrieval(encoder, entries, held, answers, index)
        log("retrieval after fine-tuning: " + _line(scores["after"]))
        curves["retrieval"] = calibration.curve(scores["after"]["top_similarity"], scores["after"]["top_correct"])
        settings["retrieval_threshold"] = calibration.choose(curves["retrieval"], args.target)
    else:
        settings["retrieval_threshold"] = DEFAULT_SIMILARITY
        log(f"{len(entries)} pairs: too few to hold some out; retrieval threshold {DEFAULT_SIMILARITY} (not calibrated)")
    detector = _intent_calibration(intents, encoder, args, settings, curves, log)
    target_dir = Path(args.out)
    _write(target_dir, settings, entries, encoder, index, detector, {"curves": curves, "retrieval": {
        k: {m: v for m, v in s.items() if not m.startswith("top_")} for k, s in scores.items()}})
    log(f"wrote {target_dir}: intent threshold {settings['intent_threshold']:.3f}, retrieval threshold "
        f"{settings['retrieval_threshold']:.3f} (each the lowest reaching {args.target:.0%} accuracy on held-out data)")
    return target_dir


def _intent_calibration(intents, encoder, args: BuildArgs, settings: dict, curves: dict, log):
    """The intent route's threshold and the out-of-scope detector, into `settings` and `curves`;
    the detector (None without an intent run)."""
    if intents is None:
        settings["intent_threshold"] = 1.01  # no intent run: the template route is never taken
        return None
    curves["intent"] = calibration.curve(intents.confidence, intents.correct)
    settings["intent_threshold"] = calibration.choose(curves["intent"], args.target)
    detector, curves["scope"] = scope.fit(encoder.embed, intents.train_texts, intents.val_texts,
                                          intents.confidence, args.keep_in_scope, args.seed)
    settings["scope_threshold"], settings["keep_in_scope"] = detector.threshold, args.keep_in_scope
    log(f"out-of-scope detector: threshold {detector.threshold:.3f} keeps {args.keep_in_scope:.0%} of the intent "
        "run's validation questions")
    return detector


def _write(target_dir: Path, settings: dict, entries, encoder, index, detector, calibrated: dict) -> None:
    """The assistant folder, all of it or nothing."""
    from tunesmith.io import atomic_dir, write_json

    with atomic_dir(target_dir) as tmp:
        write_json(tmp / "assistant.json", settings)
        (tmp / "kb.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in to_rows(entries)),
                                      encoding="utf-8")
        encoder.save(tmp / "encoder")
        index.save(tmp)
        if detector is not None:
            detector.save(tmp)
        write_json(tmp / "calibration.json", calibrated)


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
