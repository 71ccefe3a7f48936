"""ONNX export of a run's model, and the ONNX Runtime model that `predict` and `serve` run.

`tunesmith export RUN` writes `model/model.onnx` beside the safetensors weights: the graph
from token ids to logits, with batch and sequence length left dynamic. It is checked before
it is kept: ONNX Runtime must give the same logits as PyTorch on sample texts, or the file is
not written. `--backend onnx` (in `predict` and `serve`) then runs that graph instead of
PyTorch; tokenisation, batching and outputs stay the shared code of `inference.py`, so the
two backends answer the same way.

Why ONNX Runtime: it plans the whole graph once, so a call costs far less than PyTorch's
eager mode, which dispatches every module in Python. That pays where calls are small (the
server's slices of a micro-batch, one text at a time); on a whole sorted file both run the
same matrix multiplications at the CPU's peak (measurements in docs/benchmarks.md). The file
holds weights and graph only: loading it runs no code.
"""

from __future__ import annotations

import io
import logging
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import numpy as np
import torch

from tunesmith.errors import UserError
# Re-exported: the runtime half (runtimes.py) is core, so `Predictor` loads exports without compress/.
from tunesmith.runtimes import OnnxModel, current_export, onnx_path, require_export, require_runtime  # noqa: F401

# Sample inputs for the trace and the check; of different lengths so padding is exercised.
SAMPLE_TEXTS = ["a short one", "a somewhat longer sentence to check the padded positions as well", "ok",
                "numbers 123 and symbols !? too"]
TOLERANCE = 1e-3  # largest logit difference accepted between PyTorch and ONNX Runtime (fp32: ~1e-6)


def export_onnx(run, opset: int = 18) -> tuple[Path, float]:
    """Export `run`'s model to `model/model.onnx` (atomically); returns the path and the
    largest logit difference from PyTorch on the sample texts."""
    from tunesmith.ensemble import is_ensemble
    from tunesmith.inference import Predictor
    from tunesmith.io import atomic_path
    from tunesmith.methods import METHODS, supporting_methods
    from tunesmith.tasks import TASKS, supporting

    if is_ensemble(run):
        raise UserError(f"export --format onnx: {run.path} is an ensemble; export each of its member runs instead")
    cfg = run.settings()
    if not TASKS[cfg.task].exportable:
        raise UserError(f"export --format onnx: {cfg.task} runs cannot be exported yet "
                        f"(exportable: {', '.join(supporting('exportable'))})")
    if not METHODS[cfg.method].exportable:
        raise UserError(f"export --format onnx: {run.path} uses method {cfg.method}, whose runs cannot be exported yet "
                        f"(exportable: {', '.join(supporting_methods('exportable'))})")
    predictor = Predictor.from_run(run)
    model = predictor.model
    require_runtime()
    batch = _sample_batch(predictor, cfg)
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in batch]  # segments: pairs only
    graph = _LogitsOnly(model).eval()
    args = tuple(batch[n] for n in names)
    size, length = torch.export.Dim("batch"), torch.export.Dim("sequence")
    path = onnx_path(run)
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(graph, args, input_names=names, output_names=["logits"], opset_version=opset,
                                        dynamic_shapes=tuple({0: size, 1: length} for _ in names), dynamo=True,
                                        verbose=False)
    except Exception as error:  # the exporter's errors are pages long; the root cause says what failed
        while error.__cause__ is not None:
            error = error.__cause__
        raise UserError(f"export --format onnx: the model could not be traced ({str(error).splitlines()[0][:300]}); "
                        "report this with the run's config.yaml") from error
    with atomic_path(path) as tmp:
        # One self-contained file (weights inside): models served here are far below ONNX's 2 GB limit.
        program.save(str(tmp), external_data=False)
        difference = _largest_difference(graph, tmp, batch)
        if difference > TOLERANCE:
            raise UserError(f"export --format onnx: ONNX Runtime's logits differ from PyTorch's by {difference:.2e} "
                            f"(limit {TOLERANCE}); the export was not kept")
    return path, difference


@contextmanager
def _quiet_exporter():
    """The exporter prints progress lines and warns about optional packages (torchvision) it
    does not need here; a user of `tunesmith export` needs only the result line."""
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        exporter_log.setLevel(level)


class _LogitsOnly(torch.nn.Module):
    """The model with positional inputs in a fixed order and the logits as the one output (a
    question-answering model's start and end logits stacked on a last axis of 2, a sentence
    embedder's vectors)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra)
        if isinstance(out, torch.Tensor):  # a sentence embedder: the vectors themselves
            return out
        if "start_logits" in out:
            return torch.stack([out.start_logits, out.end_logits], dim=-1)
        return out.logits


def _sample_batch(predictor, cfg) -> dict:
    texts = SAMPLE_TEXTS
    pairs = bool(cfg.text_pair_col)
    # As the server reads a request: a text, a pair, a relation, or (NER) the words of a text.
    inputs = [predictor.task.serve_input(predictor.task.sample_input(t, pairs), pairs) for t in texts]
    features = predictor.task.encode(predictor.tokenizer, inputs, None, predictor.labels, predictor.max_length,
                                     use_cache=False)
    batch = features.batch(list(range(len(texts))))
    batch.pop("labels", None)
    return batch


def _largest_difference(graph, path: Path, batch: dict) -> float:
    with torch.inference_mode():
        expected = graph(**batch).float().numpy()
    got = OnnxModel(path, config=None).run(batch)
    return float(np.abs(got - expected).max())
