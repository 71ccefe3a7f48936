"""Building an assistant folder from a knowledge base and trained runs.

    assistant.json   settings and calibrated thresholds (plain JSON)
    kb.jsonl         the knowledge base as read
    retriever/       without --retriever: the sentence-embedding run trained on the knowledge
                     base's pairs (a run folder like any other: splits, report, model)
    vectors.npy      the answers' vectors; index.faiss, the FAISS index over them
    scope/           with an intent run: the out-of-scope detector (scope.py)
    calibration.json the coverage/accuracy curves the thresholds were chosen on, and the
                     retriever's test scores, untuned and tuned

The retriever is the sentence-embedding task's model (tasks/sentence_embedding.py): one way to
train, evaluate and export embeddings, whether a user asks for them or the assistant does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from pydantic import BaseModel, Field

from tunesmith.assistant import calibration, scope
from tunesmith.assistant.index import VectorIndex
from tunesmith.assistant.kb import read_kb, to_rows
from tunesmith.errors import UserError

MIN_HOLDOUT_PAIRS = 20  # below this many unseen questions the default threshold is used
DEFAULT_SIMILARITY = 0.6  # retrieval threshold when there is nothing to calibrate it on
RETRIEVER = "retriever"  # the folder, inside the assistant's, of the retriever it trains


class BuildArgs(BaseModel):
    """`tunesmith assistant build --kb FAQ.csv --out FOLDER`."""

    kb: str = Field(description="CSV/TSV/JSONL of question and answer (optional intent: its template)")
    out: str = Field(description="folder for the assistant")
    intents: Optional[str] = Field(None, description="finished text-classification run that names each question's "
                                   "intent")
    generator: Optional[str] = Field(None, description="finished causal-lm run that writes answers from retrieved "
                                     "passages")
    retriever: Optional[str] = Field(None, description="finished sentence-embedding run to retrieve with (default: "
                                     "train one on the knowledge base's pairs, into FOLDER/retriever)")
    model: Optional[str] = Field(None, description="retriever's base model (default: the intent run's, else minilm)")
    epochs: int = Field(1, gt=0, description="retriever fine-tuning passes")
    lr: float = Field(2e-5, gt=0, description="retriever learning rate")
    target: float = Field(calibration.TARGET_ACCURACY, gt=0, le=1, description="accuracy the thresholds must reach "
                          "on held-out data (coverage is traded for it)")
    keep_in_scope: float = Field(scope.KEEP_IN_SCOPE, gt=0, le=1, description="share of the intent run's validation "
                                 "questions the out-of-scope check lets through; lower catches more out-of-scope "
                                 "questions and answers fewer in-scope ones")
    max_length: Optional[int] = Field(None, gt=1, description="longest question or answer the retriever reads, in "
                                      "tokens (default: the sentence-embedding task's for the model)")
    max_new_tokens: int = Field(96, gt=0, description="with --generator: longest generated answer")
    seed: int = Field(0, description="seed of the held-out split and the fine-tuning")


def build(args: BuildArgs, train, log=print) -> Path:
    """The assistant folder. `train(cfg, log)` trains a run (`tunesmith train`'s function, passed
    in: the library sits below the commands): the retriever, unless --retriever names one."""
    from tunesmith.inference import Predictor
    from tunesmith.io import atomic_dir
    from tunesmith.runs import open_finished

    entries = read_kb(args.kb)
    intents = _intents(args.intents, Predictor)
    if args.generator and not Predictor.from_run(open_finished(args.generator)).task.generative:
        raise UserError(f"--generator {args.generator}: not a causal-lm or preference run; it cannot write answers")
    retriever = _run_of_task(args.retriever, "--retriever", "sentence-embedding", "the retriever") \
        if args.retriever else None
    target_dir = Path(args.out)
    with atomic_dir(target_dir) as tmp:  # the retriever trains inside it: all of the folder, or none
        if retriever is None:
            cfg = retriever_config(args, tmp)
            log(f"retriever: a sentence-embedding run of {cfg.model} on the knowledge base's pairs")
            retriever = train(cfg, log=log)
        embedder = Predictor.from_run(retriever)
        embed = embed_with(embedder)
        settings = {"kb": str(args.kb), "intents_run": args.intents, "generator_run": args.generator,
                    "retriever_run": args.retriever, "max_new_tokens": args.max_new_tokens, "target_accuracy": args.target}
        answers = [e.answer for e in entries]
        index = VectorIndex(embed_with(embedder, "passage")(answers))
        curves: dict = {"retrieval": [], "intent": [], "scope": []}
        settings["retrieval_threshold"], curves["retrieval"] = _retrieval_threshold(
            entries, index, embed, retriever, args.target, log)
        detector = _intent_calibration(intents, embed, args, settings, curves, log)
        tested = retriever.metrics()
        scores = {"before": tested.get("baseline"), "after": tested.get("test")}
        _write(tmp, settings, entries, index, detector, {"curves": curves, "retrieval": scores})
    log(f"wrote {target_dir}: intent threshold {settings['intent_threshold']:.3f}, retrieval threshold "
        f"{settings['retrieval_threshold']:.3f} (each the lowest reaching {args.target:.0%} accuracy on held-out data)")
    return target_dir


def embed_with(predictor, kind: str = "query"):
    """The retriever as a function from texts to unit vectors (one row per text), each text read
    as a query or as a passage (models trained with prompts, E5's, tell the two apart)."""
    def embed(texts) -> np.ndarray:
        inputs = [{"passage": text} for text in texts] if kind == "passage" else list(texts)
        return np.asarray(predictor.predict(inputs), dtype=np.float32)

    return embed


def _retrieval_threshold(entries, index, embed, retriever, target: float, log) -> tuple[float, list]:
    """The lowest similarity at which `target` of the answered questions get the right answer,
    on the knowledge-base questions the retriever never trained on; and the curve it is read off."""
    trained = {pair["anchor"] for pair in retriever.split("train").texts}
    unseen = [e for e in entries if e.question not in trained]
    if len(unseen) < MIN_HOLDOUT_PAIRS:
        log(f"{len(unseen)} knowledge-base questions the retriever never trained on: too few to calibrate on; "
            f"retrieval threshold {DEFAULT_SIMILARITY} (not calibrated)")
        return DEFAULT_SIMILARITY, []
    sims, rows = index.search(embed([e.question for e in unseen]), k=1)
    correct = [entries[int(row[0])].answer == e.answer for row, e in zip(rows, unseen)]
    log(f"retrieval: {sum(correct)}/{len(unseen)} knowledge-base questions the retriever never trained on find "
        "their answer first")
    curve = calibration.curve(sims[:, 0].tolist(), correct)
    return calibration.choose(curve, target), curve


def _run_of_task(path: str, flag: str, task: str, role: str):
    """The finished run at `path`, refused in one line unless it is a `task` run."""
    from tunesmith.runs import open_finished

    run = open_finished(path)
    if run.settings().task != task:
        raise UserError(f"{flag} {path}: a {run.settings().task} run; {role} must be a {task} run")
    return run


def retriever_config(args: BuildArgs, folder: Path):
    """A sentence-embedding run on the knowledge base's question/answer pairs, split by question
    so its test score (and the threshold) come from questions it never trained on."""
    from tunesmith.config import load_config

    base = args.model or (_intent_model(args.intents) if args.intents else "minilm")
    settings = {"task": "sentence-embedding", "data": args.kb, "model": base, "epochs": args.epochs, "lr": args.lr,
                "seed": args.seed, "output": str(folder), "name": RETRIEVER}
    if args.max_length is not None:
        settings["max_length"] = args.max_length
    return load_config(None, settings)


def _intent_model(intents_run: str) -> str:
    from tunesmith.runs import open_finished

    return open_finished(intents_run).settings().resolved_model()


def _intent_calibration(intents, embed, args: BuildArgs, settings: dict, curves: dict, log):
    """The intent route's threshold and the out-of-scope detector, into `settings` and `curves`;
    the detector (None without an intent run)."""
    if intents is None:
        settings["intent_threshold"] = 1.01  # no intent run: the template route is never taken
        return None
    curves["intent"] = calibration.curve(intents.confidence, intents.correct)
    settings["intent_threshold"] = calibration.choose(curves["intent"], args.target)
    detector, curves["scope"] = scope.fit(embed, intents.train_texts, intents.val_texts,
                                          intents.confidence, args.keep_in_scope, args.seed)
    settings["scope_threshold"], settings["keep_in_scope"] = detector.threshold, args.keep_in_scope
    log(f"out-of-scope detector: threshold {detector.threshold:.3f} keeps {args.keep_in_scope:.0%} of the intent "
        "run's validation questions")
    return detector


def _write(folder: Path, settings: dict, entries, index, detector, calibrated: dict) -> None:
    from tunesmith.io import write_json

    write_json(folder / "assistant.json", settings)
    (folder / "kb.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in to_rows(entries)),
                                     encoding="utf-8")
    index.save(folder)
    if detector is not None:
        detector.save(folder)
    write_json(folder / "calibration.json", calibrated)


@dataclass
class IntentSplits:
    confidence: np.ndarray  # the intent run's top probability on each validation question
    correct: list[bool]  # whether its top intent is the true one
    val_texts: list[str]
    train_texts: list[str]


def _intents(intents_run, Predictor) -> IntentSplits | None:
    """The intent run on its own validation split (and its training questions), or None."""
    if intents_run is None:
        return None
    run = _run_of_task(intents_run, "--intents", "text-classification", "the intent classifier")
    predictor = Predictor.from_run(run)
    val = run.split("val")
    probs = np.asarray(predictor.predict(val.texts))
    predicted = [predictor.labels[i] for i in probs.argmax(1)]
    return IntentSplits(probs.max(1), [p == y for p, y in zip(predicted, val.labels)], list(val.texts),
                        list(run.split("train").texts))
