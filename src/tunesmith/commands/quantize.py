"""`tunesmith quantize RUN`: an int8 copy of a finished run, as a new run folder
(compress/quantize.py says how; compress/lineage.py what the folder holds).

Everything that can be refused is refused before any work: ensembles, tasks and methods whose
models cannot be exported, a run that is already int8, static quantisation without ONNX.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.compress import lineage
from tunesmith.compress.quantize import onnx_available, quantize_onnx
from tunesmith.errors import UserError
from tunesmith.runs import open_finished


class QuantizeArgs(BaseModel):
    """`tunesmith quantize RUN`."""

    run: str = Field(description="finished run folder (a trained, pruned or distilled run)",
                     json_schema_extra=positional())
    mode: Literal["dynamic", "static"] = Field(
        "dynamic", description="dynamic (activation ranges per batch, nothing to calibrate) or static (ranges "
        "calibrated on 256 texts of the run's training split; ONNX only)")
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="auto (ONNX Runtime where the run exports and it is installed, else PyTorch), onnx (an "
        "int8 graph, ~4x smaller on disk), torch (int8 linear layers made at load)")
    per_channel: bool = Field(False, description="one weight scale per output row instead of per matrix: more "
                              "accurate, a little slower")
    name: Optional[str] = Field(None, description="name of the new run folder (default: <run>-int8)")
    output: Optional[str] = Field(None, description="folder for the new run (default: beside the source run)")


def quantize(args: QuantizeArgs, out=print) -> Path:
    from tunesmith.ensemble import is_ensemble
    from tunesmith.methods import METHODS, supporting_methods
    from tunesmith.tasks import TASKS, supporting

    run_path, mode, backend, per_channel = args.run, args.mode, args.backend, args.per_channel
    source = open_finished(run_path)
    if is_ensemble(source):
        raise UserError(f"quantize: {run_path} is an ensemble; quantise each of its member runs instead")
    lineage.refuse_int8_source(source, "quantize")
    cfg = source.settings()
    if not TASKS[cfg.task].quantisable:
        raise UserError(f"quantize: {cfg.task} runs cannot be quantised yet "
                        f"(quantisable: {', '.join(supporting('quantisable'))})")
    if backend == "auto":  # ONNX Runtime's int8 kernels where the model exports, else PyTorch's
        exportable = TASKS[cfg.task].exportable and METHODS[cfg.method].exportable
        backend = "onnx" if exportable and onnx_available() else "torch"
    if backend == "onnx":
        if not TASKS[cfg.task].exportable:
            raise UserError(f"quantize --backend onnx: {cfg.task} runs cannot be exported to ONNX yet "
                            f"(exportable: {', '.join(supporting('exportable'))}); use --backend torch")
        if not onnx_available():
            raise UserError("quantize --backend onnx needs ONNX Runtime: pip install 'tunesmith[onnx]', "
                            "or use --backend torch")
        if not METHODS[cfg.method].exportable:
            raise UserError(f"quantize --backend onnx: method {cfg.method}'s runs cannot be exported to ONNX "
                            f"(exportable: {', '.join(supporting_methods('exportable'))}); use --backend torch")
    if mode == "static" and backend != "onnx":
        raise UserError("quantize --mode static needs --backend onnx (PyTorch's int8 here is dynamic only)")
    target = lineage.target_folder(source, "int8", args.name, args.output)
    settings = {"mode": mode, "per_channel": per_channel}

    with lineage.building(target) as run:
        lineage.copy_run_files(source, run)
        if backend == "onnx":
            _onnx_int8(run, source, mode, per_channel, out)
            lineage.record(run, source, "quantize", {**settings, "backend": "onnx"}, backend="onnx")
        else:
            lineage.record(run, source, "quantize", {**settings, "backend": "torch"}, torch_int8=True)
        lineage.finish(run, source, out)
    out(f"wrote {target}; predict and serve it like any run (backend {backend}: chosen by --backend auto)")
    return target


def _onnx_int8(run, source, mode: str, per_channel: bool, out) -> None:
    """Export the fp32 graph into the new run, quantise it in place, and drop the fp32 weights
    (the new run runs on ONNX Runtime only; its source keeps them)."""
    from tunesmith.compress.onnx_export import current_export, export_onnx, onnx_path
    from tunesmith.compress.quantize import calibration_batches
    from tunesmith.inference import Predictor

    exported = current_export(source)
    if exported is not None:
        # `tunesmith export` checked this graph against PyTorch when it wrote it, and a finished
        # run's weights do not change: exporting again would only cost the time.
        out(f"using {source.path}'s ONNX export ({exported.name}, written after its weights)")
        fp32 = onnx_path(run)
        shutil.copy2(exported, fp32)
    else:
        out(f"exporting {source.path} to ONNX ...")
        fp32, _ = export_onnx(run)
    calibration = None
    if mode == "static":
        predictor = Predictor.from_run(run, "torch")
        import onnx

        names = [i.name for i in onnx.load(str(fp32), load_external_data=False).graph.input]
        calibration = calibration_batches(predictor, run.split("train").texts, names)
        out(f"calibrating activation ranges on {sum(len(next(iter(b.values()))) for b in calibration)} "
            "training texts ...")
    int8 = fp32.with_name("model.int8.onnx")
    quantize_onnx(fp32, int8, mode, per_channel, calibration)
    int8.replace(onnx_path(run))
    for weights in run.model_dir.glob("*.safetensors"):
        weights.unlink()
