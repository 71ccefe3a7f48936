"""How close `train`'s time estimate comes to the time a finished run took: for each run folder,
the estimate `train` would print now for its model, method and training split, beside the run's
measured training seconds per pass (metrics.json). Estimate on the same machine as the runs.

    python bench/time_estimate.py runs/tw-lora runs/sst5k-full ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from tunesmith.config import build_config
from tunesmith.models import load_tokenizer, resolve
from tunesmith.tasks import TASKS
from tunesmith.train import budget


def compare(run: Path) -> str:
    cfg = build_config(yaml.safe_load((run / "config.yaml").read_text()), str(run / "config.yaml"))
    rows = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    source = resolve(cfg.resolved_model())
    lengths = np.array([len(ids) for ids in load_tokenizer(source)([r["text"] for r in rows])["input_ids"]])
    line = budget.plan(cfg, TASKS[cfg.task], source, {"p50": int(np.percentile(lengths, 50)),
                                                      "p99": int(np.percentile(lengths, 99))}, len(rows))[0]
    training = json.loads((run / "metrics.json").read_text())["training"]
    measured = training["train_seconds"] / cfg.epochs
    return f"{run.name}: {cfg.method}, {len(rows)} rows | {line} | measured {measured:.0f} s per epoch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (single-text tasks)")
    for run in parser.parse_args().runs:
        print(compare(run))


if __name__ == "__main__":
    main()
