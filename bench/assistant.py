"""The customer-service assistant, measured (issue 19): intents with out-of-scope questions on
banking77, and answer retrieval before and after fine-tuning on an offline question/answer set.

    python bench/assistant.py --out assistant.json      # about 10 minutes on 2 cores

1. banking77: `--oos` intents (seeded) are held out of training altogether; an intent run is
   trained on the rest (MiniLM, `--method`, 3 epochs; its validation split calibrates the
   threshold). On the official test split: intent accuracy on in-scope questions, and how well
   "confidence below the threshold" finds the held-out intents' questions (out-of-scope
   precision and recall), with the share of in-scope questions answered; then the same for the
   assistant's out-of-scope detector (scope.py: confidence and closeness to the nearest
   training question) at several shares of in-scope validation questions kept, against
   max-softmax alone at the same shares.
2. Answer retrieval: Alpaca's instruction (+ input) -> output pairs with a distinct output of at
   least 40 characters, as a knowledge base; `assistant build` trains its retriever as a
   sentence-embedding run, which holds 10% of the questions out for its test split and scores
   NDCG@10, MRR@10 and recall@1/@10 of finding each test question's answer among the split's
   answers, untuned and tuned on the other questions.
3. Latency per question of the built assistant (intent run + retriever), over 200 questions, and
   the built assistant's own `in_scope` answer on every banking77 test question.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"


def intents_with_out_of_scope(folder: Path, oos: int, method: str, seed: int) -> dict:
    from tunesmith.assistant import calibration
    from tunesmith.commands.train import train
    from tunesmith.config import build_config
    from tunesmith.inference import Predictor

    train_frame = pd.read_csv(DATASETS / "banking77" / "train.csv")
    test_frame = pd.read_csv(DATASETS / "banking77" / "test.csv")
    held = set(random.Random(seed).sample(sorted(train_frame["category"].unique()), oos))
    train_frame[~train_frame["category"].isin(held)].to_csv(folder / "in_scope.csv", index=False)
    test_frame[~test_frame["category"].isin(held)].to_csv(folder / "in_scope_test.csv", index=False)
    cfg = build_config({"data": str(folder / "in_scope.csv"), "test_data": str(folder / "in_scope_test.csv"),
                        "label_col": "category", "method": method, "epochs": 3, "output": str(folder),
                        "name": "intents", "seed": seed}, "train")
    started = time.perf_counter()
    run = train(cfg, log=lambda _: None)
    train_s = time.perf_counter() - started
    predictor = Predictor.from_run(run)
    val = run.split("val")
    val_probs = np.asarray(predictor.predict(val.texts))
    val_correct = [predictor.labels[i] == y for i, y in zip(val_probs.argmax(1), val.labels)]
    curve = calibration.curve(val_probs.max(1), val_correct)
    threshold = calibration.choose(curve)
    probs = np.asarray(predictor.predict(list(test_frame["text"])))
    confidence = probs.max(1)
    in_scope = ~test_frame["category"].isin(held).to_numpy()
    predicted = np.array([predictor.labels[i] for i in probs.argmax(1)])
    right = predicted == test_frame["category"].to_numpy()
    answered = confidence >= threshold
    oos_scores = calibration.out_of_scope_scores(confidence, in_scope, threshold)
    # The trade-off a user picks from: thresholds at quantiles of the validation confidences.
    tradeoff = []
    for q in (0.0, 0.05, 0.1, 0.2, 0.3, 0.5):
        t = float(np.quantile(val_probs.max(1), q))
        flagged = calibration.out_of_scope_scores(confidence, in_scope, t)
        kept = in_scope & (confidence >= t)
        tradeoff.append({"threshold": t, "val_quantile": q, "in_scope_answered": float(kept.sum() / in_scope.sum()),
                         "accuracy_of_answered": float(right[kept].mean()) if kept.any() else 0.0,
                         "oos_precision": flagged["precision"], "oos_recall": flagged["recall"]})
    scope_rows = scope_tradeoff(run, val, val_probs.max(1), list(test_frame["text"]), confidence, in_scope)
    return {"tradeoff": tradeoff, "scope": scope_rows, "run": str(run.path), "held_out_intents": sorted(held), "method": method, "train_s": round(train_s, 1),
            "threshold": threshold, "in_scope_test": int(in_scope.sum()), "out_of_scope_test": int((~in_scope).sum()),
            "intent_accuracy_in_scope": float(right[in_scope].mean()),
            "in_scope_answered": float(answered[in_scope].mean()),
            "accuracy_of_answered_in_scope": float(right[in_scope & answered].mean()),
            "oos_precision": oos_scores["precision"], "oos_recall": oos_scores["recall"], "curve": curve}


def scope_tradeoff(run, val, val_confidence, test_texts, confidence, in_scope) -> list[dict]:
    """Out-of-scope precision/recall of the scope detector (base MiniLM vectors, as `assistant
    build` starts from) and of max-softmax, each keeping a share of in-scope validation questions."""
    from transformers import AutoModel

    from tunesmith import models
    from tunesmith.assistant import calibration, scope
    from tunesmith.evaluate.features import embed_with, normalise

    source = models.resolve("minilm")
    encoder, tokenizer = AutoModel.from_pretrained(source), models.load_tokenizer(source)
    embedded: dict = {}  # the three fits embed the same texts

    def embed(texts):
        if tuple(texts) not in embedded:
            embedded[tuple(texts)] = normalise(embed_with(encoder, tokenizer, list(texts), 128, use_cache=False))
        return embedded[tuple(texts)]

    test_vectors = embed(test_texts)
    rows = []
    for keep in (0.95, 0.9, 0.8):
        detector, _ = scope.fit(embed, list(run.split("train").texts), list(val.texts), val_confidence, keep)
        scores = detector.score(confidence, test_vectors)
        for name, values, threshold in (("max-softmax", confidence, float(np.quantile(val_confidence, 1 - keep))),
                                        ("scope", scores, detector.threshold)):
            flagged = calibration.out_of_scope_scores(values, in_scope, threshold)
            rows.append({"keep": keep, "detector": name, "in_scope_kept": float((values[in_scope] >= threshold).mean()),
                         "oos_precision": flagged["precision"], "oos_recall": flagged["recall"]})
    return rows


def alpaca_kb(path: Path, limit: int) -> int:
    rows = json.loads((DATASETS / "alpaca_subset" / "alpaca_5000.json").read_text(encoding="utf-8"))
    seen, kept = set(), []
    for row in rows:
        answer = row["output"].strip()
        if len(answer) < 40 or answer in seen:
            continue
        seen.add(answer)
        question = (row["instruction"] + (" " + row["input"] if row["input"].strip() else "")).strip()
        kept.append({"question": question, "answer": answer})
    pd.DataFrame(kept[:limit]).to_json(path, orient="records", lines=True, force_ascii=False)
    return len(kept[:limit])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oos", type=int, default=10, help="banking77 intents held out as out of scope")
    parser.add_argument("--method", default="freeze", help="the intent run's method (default: freeze, the fastest)")
    parser.add_argument("--kb-rows", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="assistant.json")
    parser.add_argument("--intents-only", action="store_true", help="part 1 only (no knowledge base, no latency)")
    args = parser.parse_args()

    from tunesmith.assistant import calibration
    from tunesmith.assistant.build import BuildArgs
    from tunesmith.commands.assistant import build
    from tunesmith.assistant.router import Assistant

    folder = Path(tempfile.mkdtemp(prefix="assistant-bench-"))
    intents = intents_with_out_of_scope(folder, args.oos, args.method, args.seed)
    print(f"intents: {intents['in_scope_test']} in-scope and {intents['out_of_scope_test']} out-of-scope test questions; "
          f"threshold {intents['threshold']:.3f}")
    print("\n| threshold (validation quantile) | in-scope answered | accuracy of answered | OOS precision | OOS recall |")
    print("|---|---|---|---|---|")
    for row in intents["tradeoff"]:
        print(f"| {row['threshold']:.3f} ({row['val_quantile']:.0%}) | {row['in_scope_answered']:.4f} | "
              f"{row['accuracy_of_answered']:.4f} | {row['oos_precision']:.4f} | {row['oos_recall']:.4f} |")
    print("\n| detector | in-scope validation kept | in-scope test kept | OOS precision | OOS recall |")
    print("|---|---|---|---|---|")
    for row in intents["scope"]:
        print(f"| {row['detector']} | {row['keep']:.0%} | {row['in_scope_kept']:.4f} | {row['oos_precision']:.4f} | "
              f"{row['oos_recall']:.4f} |")
    if args.intents_only:
        Path(args.out).write_text(json.dumps({"intents": intents}, indent=2))
        return
    rows = alpaca_kb(folder / "kb.jsonl", args.kb_rows)
    started = time.perf_counter()
    build(BuildArgs(kb=str(folder / "kb.jsonl"), out=str(folder / "bot"), intents=intents["run"], model="minilm",
                    seed=args.seed))
    build_s = time.perf_counter() - started
    retrieval = json.loads((folder / "bot" / "calibration.json").read_text())["retrieval"]

    assistant = Assistant(folder / "bot")
    questions = list(pd.read_csv(DATASETS / "banking77" / "test.csv")["text"].sample(200, random_state=args.seed))
    assistant.answer(questions[0])  # warm-up
    times, routes = [], {}
    for question in questions:
        started = time.perf_counter()
        route = assistant.answer(question).route
        times.append(1000 * (time.perf_counter() - started))
        routes[route] = routes.get(route, 0) + 1
    latency = {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)), "routes": routes}
    test_frame = pd.read_csv(DATASETS / "banking77" / "test.csv")
    truth = ~test_frame["category"].isin(intents["held_out_intents"]).to_numpy()
    said = np.array([assistant.answer(q).in_scope for q in test_frame["text"]], dtype=bool)
    flagged = calibration.out_of_scope_scores(said.astype(float), truth, 0.5)
    built_scope = {"in_scope_kept": float(said[truth].mean()), "oos_precision": flagged["precision"],
                   "oos_recall": flagged["recall"]}
    print(f"\nthe built assistant's in_scope on {len(truth)} test questions: in-scope kept {built_scope['in_scope_kept']:.4f}, "
          f"OOS precision {built_scope['oos_precision']:.4f}, recall {built_scope['oos_recall']:.4f}")

    print("\n| intents | accuracy (in scope) | answered (in scope) | accuracy of answered | OOS precision | OOS recall |")
    print("|---|---|---|---|---|---|")
    print(f"| banking77, {77 - args.oos} trained + {args.oos} held out ({args.method}) | "
          f"{intents['intent_accuracy_in_scope']:.4f} | {intents['in_scope_answered']:.4f} | "
          f"{intents['accuracy_of_answered_in_scope']:.4f} | {intents['oos_precision']:.4f} | {intents['oos_recall']:.4f} |")
    print(f"\n| retrieval ({rows} Alpaca pairs, test split) | NDCG@10 | MRR@10 | recall@1 | recall@10 |")
    print("|---|---|---|---|---|")
    for when in ("before", "after"):
        r = retrieval[when]
        print(f"| {when} fine-tuning | {r['ndcg_at_10']:.4f} | {r['mrr_at_10']:.4f} | {r['recall_at_1']:.4f} | "
              f"{r['recall_at_10']:.4f} |")
    print(f"\nlatency per question: p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms; routes {routes}; "
          f"build {build_s:.0f} s, intent run {intents['train_s']:.0f} s")
    Path(args.out).write_text(json.dumps({"intents": intents, "retrieval": retrieval, "latency": latency,
                                          "built_scope": built_scope, "build_s": build_s}, indent=2))


if __name__ == "__main__":
    main()
