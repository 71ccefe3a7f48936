"""`tunesmith export RUN`: the run's model as an ONNX graph (`model/model.onnx`), kept only
when ONNX Runtime reproduces PyTorch's logits; `predict` and `serve` run it with
`--backend onnx`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.runs import open_finished


class ExportArgs(BaseModel):
    """`tunesmith export RUN`."""

    run: str = Field(description="finished run folder", json_schema_extra=positional())
    format: Literal["onnx"] = Field("onnx", description="export format")


def export(args: ExportArgs, out=print) -> Path:
    from tunesmith.compress.onnx_export import export_onnx
    from tunesmith.tasks.seq2seq import is_encoder_decoder

    run = open_finished(args.run)
    if is_encoder_decoder(str(run.model_dir)):  # summarization, translation: encoder and decoders, Optimum's layout
        return _export_encoder_decoder(run, out)
    path, difference = export_onnx(run)
    size_mb = path.stat().st_size / 1e6
    out(f"wrote {path} ({size_mb:.1f} MB); largest logit difference from PyTorch on sample texts: {difference:.1e}")
    out(f"next: tunesmith serve {run.path} --backend onnx   or   tunesmith predict {run.path} INPUT -o OUT --backend onnx")
    return path


def _export_encoder_decoder(run, out) -> Path:
    from tunesmith.compress.seq2seq_onnx import export_seq2seq

    paths, difference = export_seq2seq(run)
    size_mb = sum(p.stat().st_size for p in paths) / 1e6
    out(f"wrote {', '.join(p.name for p in paths)} in {run.model_dir} ({size_mb:.1f} MB); largest logit difference "
        f"from PyTorch over greedy decoding of sample texts: {difference:.1e}")
    out("load them with Optimum's ORTModelForSeq2SeqLM, or run them with ONNX Runtime; tunesmith serves this run "
        "with PyTorch")
    return paths[0]
