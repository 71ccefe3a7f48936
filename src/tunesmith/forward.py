"""The forward pass over batches, shared by validation during training, `eval`, `predict` and
`serve`, and the prediction files they write.

Inputs are sorted by length and padded per batch, under `torch.inference_mode`: on a CPU this
is where most of the prediction speed-up over a plain pipeline comes from. Tasks call these;
`inference.Predictor` (a finished run, loaded) sits above the tasks.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from tunesmith.data.batching import inference_batches

INFERENCE_BATCH = 32  # sorted batches of 16-32 measured fastest on a 2-core CPU (cache-sized); 64+ is slower


@contextmanager
def evaluating(model):
    """Eval mode (no dropout) and no gradients; yields the model's device. The model's training
    mode is restored afterwards, so validation in the middle of training leaves it training.
    A model outside PyTorch (an ONNX Runtime graph) runs on the CPU."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield next(model.parameters()).device if isinstance(model, torch.nn.Module) else torch.device("cpu")
    finally:
        model.train(was_training)


def forward_batches(model, features, batch_size: int = INFERENCE_BATCH):
    """(indices, logits) for every batch of `features`, shortest padding first, under
    `evaluating`. The one inference loop of every sequence-level task (validation during
    training, `eval`, `predict`, `serve`)."""
    from tunesmith.data.long_text import sequence_logits

    with evaluating(model) as device:
        for indices in inference_batches(features.lengths, batch_size):
            batch = features.batch(indices)
            batch.pop("labels", None)  # targets are the task's business, not the forward's
            batch = {k: v.to(device) for k, v in batch.items()}
            yield indices, sequence_logits(model, batch, features.pool).float().cpu().numpy()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis (float32, numerically stable)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def predict_logits(model, features, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
    """Raw head outputs (one row per example, input order) for any sequence-level task."""
    out = np.zeros((len(features), model.config.num_labels), dtype=np.float32)
    for indices, logits in forward_batches(model, features, batch_size):
        out[indices] = logits
    return out


def write_predictions(path: Path, rows: list[dict], probs: np.ndarray, labels: list[str]) -> None:
    """Predicted label and per-class scores beside the input columns (a `scores` object in
    JSONL, one `score_<label>` column each in CSV)."""
    predicted = [labels[i] for i in probs.argmax(axis=1)]
    scores = [{l: round(float(s), 6) for l, s in zip(labels, p)} for p in probs]
    write_rows(path, [{**row, "label": label, "scores": s} for row, label, s in zip(rows, predicted, scores)],
               [{**row, "label": label, **{f"score_{l}": v for l, v in s.items()}}
                for row, label, s in zip(rows, predicted, scores)])


def write_rows(path: Path, rows: list[dict], csv_rows: list[dict] | None = None) -> None:
    """Prediction records as JSONL, or as CSV/TSV (`csv_rows` when the flat shape differs;
    otherwise nested values become JSON text in their cell), written atomically."""
    import json

    import pandas as pd

    from tunesmith.io import atomic_path

    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".jsonl", ".json"):
            with open(tmp, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            flat = csv_rows if csv_rows is not None else [
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v for k, v in row.items()}
                for row in rows]
            pd.DataFrame(flat).to_csv(tmp, index=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
