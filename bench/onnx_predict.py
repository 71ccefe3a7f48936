"""PyTorch vs ONNX Runtime for one run's predictions, in one process: texts/s for a whole file
(sorted batches of 32), one text at a time, and in random groups of 32 split into sorted
slices of 8 (what the server does under load), plus how often the two backends agree.

    python bench/onnx_predict.py --run runs/quickstart-...   # default: the newest quickstart run
The run is exported first (`tunesmith export`) when it has no model/model.onnx.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def rate(fn, count: int) -> float:
    started = time.perf_counter()
    fn()
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="run folder (default: newest runs/quickstart-*)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per setting (the best is printed)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tunesmith.compress.onnx_export import export_onnx, onnx_path
    from tunesmith.inference import Predictor
    from tunesmith.runs import Run

    run = Run(Path(args.run) if args.run else sorted((ROOT / "runs").glob("quickstart-*/metrics.json"))[-1].parent)
    if not onnx_path(run).is_file():
        export_onnx(run)
    texts = [json.loads(line)["text"] for line in (run.path / "data" / "test.jsonl").read_text().splitlines()]
    random.seed(0)
    groups = [random.sample(texts, 32) for _ in range(30)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; run {run.path}; "
          f"{len(texts)} test texts")
    predictors = {backend: Predictor.from_run(run, backend) for backend in ("torch", "onnx")}
    results = {}
    for backend, predictor in predictors.items():
        predictor.predict(texts[:64])  # warm-up
        settings = {
            "file, sorted batches of 32": (lambda p=predictor: p.predict(texts), len(texts)),
            "one text at a time (200)": (lambda p=predictor: [p.predict([t]) for t in texts[:200]], 200),
            "groups of 32 in slices of 8": (lambda p=predictor: [p.predict(g, 8) for g in groups], 32 * len(groups)),
            "groups of 32 as one pass": (lambda p=predictor: [p.predict(g, 32) for g in groups], 32 * len(groups)),
        }
        results[backend] = {name: max(rate(fn, n) for _ in range(args.repeats)) for name, (fn, n) in settings.items()}
    agree = float(np.mean(predictors["torch"].predict(texts).argmax(1) == predictors["onnx"].predict(texts).argmax(1)))
    print("\n| setting | torch texts/s | onnx texts/s | onnx / torch |\n|---|---|---|---|")
    for name in results["torch"]:
        t, o = results["torch"][name], results["onnx"][name]
        print(f"| {name} | {t:.1f} | {o:.1f} | {o / t:.2f}x |")
    print(f"\nsame predicted label on {agree:.2%} of the {len(texts)} test texts")


if __name__ == "__main__":
    main()
