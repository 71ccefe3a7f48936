"""How a finished run's model runs besides its safetensors weights: its ONNX graph under ONNX
Runtime, and PyTorch's dynamic int8. Loading these is part of the core (`Predictor.from_run`
reads any run); making them is compress/'s (`export`, `quantize`).

Why ONNX Runtime: it plans the whole graph once, so a call costs far less than PyTorch's eager
mode, which dispatches every module in Python. The file holds weights and graph only: loading
it runs no code.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from tunesmith.errors import UserError

ONNX_FILE = "model.onnx"


def onnx_path(run) -> Path:
    return run.model_dir / ONNX_FILE


def current_export(run) -> Path | None:
    """The run's ONNX export if it was written after each of its weight files (so it is of these
    weights, as `export` checked it), else None."""
    path = onnx_path(run)
    if not path.is_file():
        return None
    written = path.stat().st_mtime
    current = all(weights.stat().st_mtime <= written for weights in run.model_dir.glob("*.safetensors"))
    return path if current else None


def require_export(run) -> Path:
    """The run's ONNX file, or the one error that says how to make it (`--backend onnx`)."""
    path = onnx_path(run)
    if not path.is_file():
        raise UserError(f"--backend onnx: {run.path} has no ONNX export (model/{ONNX_FILE}); "
                        f"create it with `tunesmith export {run.path}`, or use --backend torch")
    return path


def torch_dynamic_int8(model):
    """`model` with its nn.Linear layers as PyTorch's dynamically quantised int8 ones."""
    import torch

    with warnings.catch_warnings():  # torch.ao's quantised tensors warn that torchao will replace them
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8).eval()


def require_runtime():
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise UserError("ONNX needs its extra: pip install 'tunesmith[onnx]'") from None


def spans_model(config) -> bool:
    """Whether a transformers config is an extractive question-answering model's."""
    return any(name.endswith("ForQuestionAnswering") for name in getattr(config, "architectures", None) or [])


class OnnxModel:
    """An exported graph under ONNX Runtime, called like the transformers model it came from
    (`model(**batch).logits`), so the shared inference loop runs it unchanged."""

    training = False

    def __init__(self, path: Path, config):
        require_runtime()
        import onnxruntime as ort

        options = ort.SessionOptions()
        # The same thread count as PyTorch would use, so `serve --threads` means one thing.
        options.intra_op_num_threads = torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle ORT threads spin by default, taking the CPU that the server's event loop (and
        # PyTorch's own threads) need between batches.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = config  # the run's transformers config: labels, thresholds

    @classmethod
    def from_run(cls, run) -> "OnnxModel":
        from transformers import AutoConfig

        return cls(require_export(run), AutoConfig.from_pretrained(str(run.model_dir)))

    def run(self, batch: dict) -> np.ndarray:
        # The graph takes exactly the inputs it was traced with (segment ids for pairs only),
        # which are the ones the run's own encoding produces.
        return self.session.run(["logits"], {name: batch[name].numpy() for name in self.input_names})[0]

    def __call__(self, **batch):
        logits = torch.from_numpy(self.run(batch))
        if spans_model(self.config):  # the graph's one output is the start and end logits, stacked
            return SimpleNamespace(logits=logits, start_logits=logits[..., 0], end_logits=logits[..., 1])
        return SimpleNamespace(logits=logits)

    # The inference loop switches modes around its passes; a graph has only one.
    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self
