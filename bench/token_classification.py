"""NER: tunesmith vs the plain Hugging Face way, in one process, on the same machine.

Same CoNLL-2003 sentences, model (MiniLM), batch size, max length, learning rate, schedule
and epochs: (a) `tunesmith train --task token-classification` and its predictor; (b) the
Transformers token-classification recipe: a fast tokenizer with `is_split_into_words`, the
label on each word's first sub-word via `word_ids()`, `DataCollatorForTokenClassification`,
`Trainer`, and `Trainer.predict`. Both are scored with the same entity-level F1 code
(strict span match), on the same test sentences.

    python bench/token_classification.py                        # 2000 train sentences, full test set
    python bench/token_classification.py --train-samples 14041 --epochs 3

Timing rules as in bench/text_classification.py: training time excludes evaluation, and
prediction time runs from words to per-word tags (tokenisation included), after a warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CONLL = ROOT.parent / "shared" / "datasets" / "conll2003"


def load_data(train_samples: int, seed: int):
    from tunesmith.data.tagged import read_tagged_file

    if not (CONLL / "train.txt").is_file():
        raise SystemExit(f"{CONLL}: CoNLL-2003 not found; this benchmark needs ../shared/datasets/conll2003")
    train = read_tagged_file(CONLL / "train.txt")
    random.Random(seed).shuffle(train)
    return train[:train_samples], read_tagged_file(CONLL / "valid.txt")[:500], read_tagged_file(CONLL / "test.txt")


def write_conll(path: Path, sentences) -> str:
    path.write_text("\n\n".join("\n".join(f"{w} {t}" for w, t in zip(s.words, s.tags)) for s in sentences) + "\n")
    return str(path)


def run_tunesmith(train, val, test, args, workdir) -> dict:
    from tunesmith.commands.train import train as ts_train
    from tunesmith.config import TrainConfig
    from tunesmith.evaluate.entities import entity_metrics
    from tunesmith.inference import Predictor
    from tunesmith.tasks.token_classification import decode

    cfg = TrainConfig(task="token-classification", data=write_conll(workdir / "train.txt", train),
                      val_data=write_conll(workdir / "val.txt", val), test_data=write_conll(workdir / "test.txt", test),
                      method="full", epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                      lr=args.lr, seed=args.seed, output=str(workdir / "runs"), name="ts")
    run = ts_train(cfg, log=lambda *_: None)
    metrics = json.loads(run.metrics_file.read_text())
    predictor = Predictor.from_run(run)
    words = [s.words for s in test]
    predictor.predict(words[:64])  # warm-up
    started = time.perf_counter()
    outputs = predictor.predict(words)
    seconds = time.perf_counter() - started
    f1 = entity_metrics([s.tags for s in test], decode(outputs, predictor.labels))["f1"]
    return {"train_sps": metrics["training"]["samples_per_second"], "predict_sps": len(test) / seconds, "f1": f1}


def run_huggingface(train, test, args, workdir) -> dict:
    from datasets import Dataset
    from transformers import (AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,
                              Trainer, TrainingArguments)

    from tunesmith.evaluate.entities import entity_metrics
    from tunesmith.models import resolve

    source = resolve("minilm")
    tokenizer = AutoTokenizer.from_pretrained(source)
    types = sorted({t[2:] for s in train for t in s.tags if t != "O"})
    labels = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]

    def align(words_batch, tags_batch=None):
        encoded = tokenizer(words_batch, is_split_into_words=True, truncation=True, max_length=args.max_length)
        if tags_batch is not None:
            encoded["labels"] = []
            for i, tags in enumerate(tags_batch):
                previous, row = None, []
                for word in encoded.word_ids(i):
                    row.append(-100 if word is None or word == previous else labels.index(tags[word]))
                    previous = word
                encoded["labels"].append(row)
        return encoded

    ds = Dataset.from_dict({"words": [s.words for s in train], "tags": [s.tags for s in train]})
    ds = ds.map(lambda b: align(b["words"], b["tags"]), batched=True, remove_columns=["words", "tags"])
    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(source, num_labels=len(labels))
    training_args = TrainingArguments(
        output_dir=str(workdir / "hf"), per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=64,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_steps=0.06, weight_decay=0.01,
        lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed, eval_strategy="no", save_strategy="no",
        report_to=[], logging_steps=50, use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=ds,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    train_out = trainer.train()

    def predict(sentences) -> list[list[str]]:
        encoded = align([s.words for s in sentences])
        rows = [{"input_ids": i, "attention_mask": m} for i, m in zip(encoded["input_ids"], encoded["attention_mask"])]
        logits = trainer.predict(rows).predictions
        out = []
        for i, s in enumerate(sentences):
            tags, previous = ["O"] * len(s.words), None  # words cut off by truncation stay O
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word != previous:
                    tags[word] = labels[int(logits[i, position].argmax())]
                previous = word
            out.append(tags)
        return out

    predict(test[:64])  # warm-up
    started = time.perf_counter()
    predicted = predict(test)
    seconds = time.perf_counter() - started
    f1 = entity_metrics([s.tags for s in test], predicted)["f1"]
    return {"train_sps": train_out.metrics["train_samples_per_second"], "predict_sps": len(test) / seconds, "f1": f1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    train, val, test = load_data(args.train_samples, args.seed)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    print(f"data: CoNLL-2003: {len(train)} train sentences, {len(test)} test; batch {args.batch_size}, "
          f"max_length {args.max_length}, epochs {args.epochs}, lr {args.lr}")
    with tempfile.TemporaryDirectory() as tmp:
        ts = run_tunesmith(train, val, test, args, Path(tmp))
        hf = run_huggingface(train, test, args, Path(tmp))
    result = {"tunesmith": ts, "huggingface": hf, "train_ratio": ts["train_sps"] / hf["train_sps"],
              "predict_ratio": ts["predict_sps"] / hf["predict_sps"]}
    print()
    print("| train samples/s (tunesmith / HF) | ratio | predict sentences/s (tunesmith / HF) | ratio "
          "| test entity F1 (tunesmith / HF) |")
    print("|---|---|---|---|---|")
    print(f"| {ts['train_sps']:.1f} / {hf['train_sps']:.1f} | {result['train_ratio']:.2f}x "
          f"| {ts['predict_sps']:.1f} / {hf['predict_sps']:.1f} | {result['predict_ratio']:.2f}x "
          f"| {ts['f1']:.4f} / {hf['f1']:.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "result": result}, indent=2))


if __name__ == "__main__":
    main()
