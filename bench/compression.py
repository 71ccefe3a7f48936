"""Prediction throughput of a run and its int8 copy against the plain Hugging Face way, in one
process, on the run's own test split:

(a) `transformers.Trainer.predict` on the run's fp32 model (DataCollatorWithPadding, eval batch
    64, texts tokenised in one call: the cheapest plain way);
(b) `tunesmith predict`'s path on the same fp32 model (sorted batches of 32, PyTorch);
(c) the same on `tunesmith quantize RUN`'s int8 ONNX run (made first when RUN-int8 is absent);
(d) any --also runs (a distilled student, its int8 copy), each on its own backend.

    python bench/compression.py --run runs/b77-full
Prints texts/s, the ratio to (a), and the test metric of each; the best of --repeats passes.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def best_rate(fn, count: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        rates.append(count / (time.perf_counter() - started))
    return max(rates)


def trainer_predict(run):
    """Trainer.predict on the run's own fp32 model: the plain Hugging Face way."""
    import tempfile

    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from tunesmith.methods import load_tuned
    from tunesmith.tasks import TASKS

    cfg = run.settings()
    task = TASKS[cfg.task]
    model = load_tuned(task, str(run.model_dir))
    tokenizer = task.load_processor(str(run.model_dir), cfg)
    args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_eval_batch_size=64, report_to=[],
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer))

    def predict(batch: list[str]) -> np.ndarray:
        encoded = tokenizer(batch, truncation=True, max_length=cfg.resolved_max_length())
        rows = [{"input_ids": i, "attention_mask": m} for i, m in zip(encoded["input_ids"], encoded["attention_mask"])]
        return trainer.predict(rows).predictions

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished single-text classification run (fp32)")
    parser.add_argument("--repeats", type=int, default=3, help="passes per setting (the best is printed)")
    parser.add_argument("--also", default="", help="more runs of the same splits to measure the same way, comma-"
                        "separated (e.g. RUN-3layers,RUN-3layers-int8: a distilled student and its int8 copy)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tunesmith.commands.quantize import QuantizeArgs, quantize
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    run = Run(Path(args.run))
    int8 = Run(run.path.parent / f"{run.path.name}-int8")
    if not int8.path.is_dir():
        quantize(QuantizeArgs(run=str(run.path)), out=lambda _: None)
    test = run.split("test")
    texts, labels = list(test.texts), run.labels()
    truth = np.array([labels.index(label) for label in test.labels])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"run {run.path}; {len(texts)} test texts")
    sides = {"HF Trainer.predict (fp32)": trainer_predict(run),
             "tunesmith, torch fp32": Predictor.from_run(run, "torch").predict,
             "tunesmith, int8 ONNX (quantize)": Predictor.from_run(int8).predict}
    for other in filter(None, args.also.split(",")):
        other_run = Run(Path(other))
        steps = " + ".join(step["kind"] for step in (other_run.compression() or {}).get("lineage", [])) or "fp32"
        sides[f"tunesmith, {other_run.path.name} ({steps})"] = Predictor.from_run(other_run).predict
    rows = []
    for name, predict in sides.items():
        predict(texts[:64])  # warm-up
        rate = best_rate(lambda p=predict: p(texts), len(texts), args.repeats)
        accuracy = float((np.asarray(predict(texts)).argmax(1) == truth).mean())
        rows.append((name, rate, accuracy))
    base = rows[0][1]
    print("\n| predictor | texts/s | vs HF Trainer | test accuracy |\n|---|---|---|---|")
    for name, rate, accuracy in rows:
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x | {accuracy:.4f} |")


if __name__ == "__main__":
    main()
