"""tunesmith vs the plain Hugging Face way, in one process, on the same machine.

Same data, model, batch size, max length, learning rate, schedule, epochs and LoRA settings:
(a) `tunesmith train` and its predictor; (b) `transformers.Trainer` with
`DataCollatorWithPadding` (and PEFT for LoRA), `Trainer.predict` for prediction.
Prints train samples/s, predict samples/s, their ratios, and both test accuracies.

    python bench/text_classification.py                      # SST-2 subset if ../shared/datasets is there
    python bench/text_classification.py --methods lora --train-samples 2000

Timing rules: training time excludes evaluation for both (the HF Trainer runs with
eval_strategy="no"; tunesmith's clock stops during its validation passes). Prediction time
is the wall time from raw test texts to class scores (tokenisation included for both), model
already loaded and warmed up on 64 texts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "datasets" / "sst2"


def load_data(train_samples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    if (SST2 / "train.tsv").is_file():
        train = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False)
        test = pd.read_csv(SST2 / "dev.tsv", sep="\t", quoting=3, dtype=str, keep_default_na=False)
        train = train.rename(columns={"sentence": "text"}).sample(n=train_samples, random_state=seed)
        test = test.rename(columns={"sentence": "text"})
        return train[["text", "label"]], test[["text", "label"]], "SST-2 (train sample / full dev)"
    from tunesmith.data.builtin import tweets_sentiment

    frame = tweets_sentiment().frame.drop_duplicates("text").sample(frac=1.0, random_state=seed)
    return frame.iloc[:train_samples], frame.iloc[train_samples : train_samples + 1000], "tweets-sentiment"


def run_tunesmith(method, train, val, test, args, workdir) -> dict:
    from tunesmith.commands.train import train as ts_train
    from tunesmith.config import TrainConfig
    from tunesmith.inference import Predictor

    paths = {}
    for name, frame in (("train", train), ("val", val), ("test", test)):
        paths[name] = workdir / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    cfg = TrainConfig(data=str(paths["train"]), val_data=str(paths["val"]), test_data=str(paths["test"]),
                      method=method, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
                      lr=args.lr[method], seed=args.seed, baseline=False, output=str(workdir / "runs"),
                      name=f"ts-{method}")
    run = ts_train(cfg, log=lambda *_: None)
    metrics = json.loads(run.metrics_file.read_text())
    predictor = Predictor.from_run(run)
    predictor.predict(test["text"].tolist()[:64])  # warm-up, as HF's first batch is also paid below
    started = time.perf_counter()
    probs = predictor.predict(test["text"].tolist())
    seconds = time.perf_counter() - started
    labels = predictor.labels
    accuracy = float(np.mean([labels[i] == y for i, y in zip(probs.argmax(1), test["label"])]))
    return {"train_sps": metrics["training"]["samples_per_second"], "predict_sps": len(test) / seconds,
            "accuracy": accuracy, "trainable_pct": metrics["parameters"]["trainable_pct"]}


def run_huggingface(method, train, test, args, workdir) -> dict:
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    from tunesmith.models import resolve

    source = resolve("minilm")
    labels = sorted(train["label"].unique())
    tokenizer = AutoTokenizer.from_pretrained(source)

    def encode(frame):
        ds = Dataset.from_dict({"text": frame["text"].tolist(), "label": [labels.index(l) for l in frame["label"]]})
        return ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=args.max_length),
                      batched=True, remove_columns=["text"])

    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(labels))
    if method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules="all-linear"))
    training_args = TrainingArguments(
        output_dir=str(workdir / f"hf-{method}"), per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64, learning_rate=args.lr[method], num_train_epochs=args.epochs,
        warmup_steps=0.06, weight_decay=0.01, lr_scheduler_type="linear", max_grad_norm=1.0, seed=args.seed,
        eval_strategy="no", save_strategy="no", report_to=[], logging_steps=50, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, disable_tqdm=True,
        train_sampling_strategy="group_by_length" if args.hf_group_by_length else "random",
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=encode(train),
                      data_collator=DataCollatorWithPadding(tokenizer))
    train_out = trainer.train()

    def predict(texts: list[str]) -> np.ndarray:
        # From raw texts, as tunesmith's timing is: one batched tokenizer call (the cheapest
        # plain way, no Arrow dataset), then Trainer.predict with DataCollatorWithPadding.
        encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
        rows = [{"input_ids": i, "attention_mask": m} for i, m in zip(encoded["input_ids"], encoded["attention_mask"])]
        return trainer.predict(rows).predictions

    texts = test["text"].tolist()
    predict(texts[:64])  # warm-up
    started = time.perf_counter()
    logits = predict(texts)
    seconds = time.perf_counter() - started
    accuracy = float((logits.argmax(1) == np.array([labels.index(l) for l in test["label"]])).mean())
    return {"train_sps": train_out.metrics["train_samples_per_second"], "predict_sps": len(test) / seconds,
            "accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", help="also write the results as JSON here")
    parser.add_argument("--sides", default="tunesmith,huggingface",
                        help="which sides to run (an experiment on one side can skip the other)")
    parser.add_argument("--mega-batch", type=int,
                        help="experiment: tunesmith's length-grouping window in batches (1 = no grouping)")
    parser.add_argument("--hf-group-by-length", action="store_true",
                        help="experiment: the Trainer groups texts by length too")
    args = parser.parse_args()
    if args.mega_batch:
        from tunesmith.data import batching

        batching.MEGA_BATCH = args.mega_batch
    args.lr = {"lora": 5e-4, "full": 5e-5}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.set_verbosity_error()

    train, test, data_name = load_data(args.train_samples, args.seed)
    val = train.sample(n=min(200, len(train) // 10), random_state=args.seed)  # only tunesmith's checkpoint pick uses it
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, cuda={torch.cuda.is_available()}")
    print(f"data: {data_name}: {len(train)} train, {len(test)} test; batch {args.batch_size}, max_length "
          f"{args.max_length}, epochs {args.epochs}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            skipped = {"train_sps": float("nan"), "predict_sps": float("nan"), "accuracy": float("nan")}
            ts = run_tunesmith(method, train, val, test, args, Path(tmp)) if "tunesmith" in args.sides else skipped
            hf = run_huggingface(method, train, test, args, Path(tmp)) if "huggingface" in args.sides else skipped
            results[method] = {"tunesmith": ts, "huggingface": hf,
                               "train_ratio": ts["train_sps"] / hf["train_sps"],
                               "predict_ratio": ts["predict_sps"] / hf["predict_sps"]}
    print()
    print("| method | train samples/s (tunesmith / HF) | ratio | predict samples/s (tunesmith / HF) | ratio "
          "| test accuracy (tunesmith / HF) |")
    print("|---|---|---|---|---|---|")
    for method, r in results.items():
        ts, hf = r["tunesmith"], r["huggingface"]
        print(f"| {method} | {ts['train_sps']:.1f} / {hf['train_sps']:.1f} | {r['train_ratio']:.2f}x "
              f"| {ts['predict_sps']:.1f} / {hf['predict_sps']:.1f} | {r['predict_ratio']:.2f}x "
              f"| {ts['accuracy']:.4f} / {hf['accuracy']:.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"data": data_name, "args": {k: v for k, v in vars(args).items()},
                                              "results": results}, indent=2))


if __name__ == "__main__":
    main()
