"""A finished run's model loaded for inference (`Predictor`), on the backend it was made for.

The batched forward pass itself is forward.py's, shared with validation during training.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.errors import UserError
from tunesmith.forward import INFERENCE_BATCH


@dataclass
class Predictor:
    """A finished run's model, loaded once for inference (safetensors only, never pickle)."""

    model: object
    tokenizer: object
    labels: list[str]
    max_length: int
    task: object
    long_text: object = None  # a LongText: how the run reads texts longer than max_length

    @classmethod
    def from_run(cls, run, backend: str = "auto") -> "Predictor":
        """`backend`: "torch" (the safetensors weights), "onnx" (the run's ONNX graph, run by
        ONNX Runtime; `tunesmith export` or `quantize` makes it), or "auto": the backend a
        compressed run was made for, else torch."""
        from tunesmith.tasks import TASKS

        from tunesmith.ensemble import EnsemblePredictor, is_ensemble

        if is_ensemble(run):  # several runs answering as one
            if backend not in ("torch", "auto"):
                raise UserError(f"--backend {backend}: {run.path} is an ensemble; serve it with --backend torch")
            return EnsemblePredictor.from_run(run, cls.from_run)
        backend = resolve_backend(run, backend)
        cfg = run.settings()
        task = TASKS[cfg.task]
        if backend == "onnx" and not task.exportable:  # e.g. an encoder-decoder's graphs: for other runtimes
            raise UserError(f"--backend onnx: {cfg.task} runs answer with PyTorch here; use --backend torch")
        if backend == "onnx":
            from tunesmith.runtimes import OnnxModel

            model = OnnxModel.from_run(run)
        else:
            from tunesmith.methods import load_tuned

            model = load_tuned(task, str(run.model_dir))
            if (run.compression() or {}).get("torch_int8"):  # `quantize --backend torch`: int8 made at load
                from tunesmith.runtimes import torch_dynamic_int8

                model = torch_dynamic_int8(model)
        tokenizer = task.load_processor(str(run.model_dir), cfg)
        from tunesmith.data.long_text import LongText

        return cls(model, tokenizer, run.labels(), cfg.resolved_max_length(), task, LongText.of(cfg))

    def predict(self, inputs: list, batch_size: int = INFERENCE_BATCH):
        """The task's outputs for raw inputs (class probabilities for text classification)."""
        features = self.task.encode(self.tokenizer, inputs, None, self.labels, self.max_length, use_cache=False,
                                    long_text=self.long_text)
        return self.task.predict(self.model, features, batch_size)


def resolve_backend(run, backend: str = "auto") -> str:
    """"torch" or "onnx" for `run`: "auto" is what a compressed run was made for (an int8 ONNX
    graph runs on ONNX Runtime), else torch; a backend the run has no model for is one error."""
    made_for = (run.compression() or {}).get("backend", "torch")
    if backend == "auto":
        return made_for
    if backend == "torch" and made_for == "onnx":
        raise UserError(f"--backend torch: {run.path} holds only its quantised ONNX graph (no PyTorch weights); "
                        "use --backend onnx or leave --backend at auto")
    return backend
