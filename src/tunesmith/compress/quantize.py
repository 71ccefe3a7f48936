"""int8 quantisation of a finished run: `tunesmith quantize RUN`.

Three ways, best first:

- ONNX Runtime, dynamic (the default): the run is exported to ONNX (compress/onnx_export.py),
  then every matrix multiplication's weights are stored as int8 and its activations are
  quantised on the fly, per batch. Nothing to calibrate, and the file is about 4x smaller.
- ONNX Runtime, static (`--mode static`): activations get fixed int8 ranges too, calibrated on
  a sample of the run's own training split (never validation or test). Less work per call;
  can cost more accuracy, because one range has to fit every input.
- PyTorch dynamic int8 (`--backend torch`), where ONNX Runtime is not installed: the run keeps
  its fp32 safetensors and its linear layers are quantised when it is loaded, so the file on
  disk is not smaller; the memory and the matrix products are.

Where the speed comes from: int8 matrix products. A CPU with AVX-512 VNNI (or AMX) multiplies
int8 at several times its fp32 rate; one with only AVX2 gains less. Per-channel weights
(`--per-channel`) keep one scale per output row instead of one per matrix: more accurate, a
little slower.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError

CALIBRATION_ROWS = 256  # static ranges settle after a few hundred texts; more only costs time


def onnx_available() -> bool:
    try:
        import onnxruntime.quantization  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def quantize_onnx(fp32: Path, out: Path, mode: str, per_channel: bool, calibration: list[dict] | None = None) -> None:
    """Write `fp32`'s graph quantised to int8 at `out`. `calibration`: input batches (name ->
    int64 array) for static ranges."""
    # ONNX Runtime logs a suggestion to pre-process on every call (to the root logger); the
    # exported graph is already shape-inferred, and ORT optimises it again when it loads.
    logging.disable(logging.WARNING)
    try:
        _quantize(fp32, out, mode, per_channel, calibration)
    finally:
        logging.disable(logging.NOTSET)


def _quantize(fp32: Path, out: Path, mode: str, per_channel: bool, calibration: list[dict] | None) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if mode == "dynamic":
            quantize_dynamic(str(fp32), str(out), per_channel=per_channel, weight_type=QuantType.QInt8)
            return

        class Batches(CalibrationDataReader):
            def __init__(self, batches):
                self.batches = iter(batches)

            def get_next(self):
                return next(self.batches, None)

        # QDQ with uint8 activations and int8 weights: ONNX Runtime's recommended format on x86.
        quantize_static(str(fp32), str(out), Batches(calibration or []), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def calibration_batches(predictor, texts: list, input_names: list[str], rows: int = CALIBRATION_ROWS,
                        batch_size: int = 16) -> list[dict]:
    """Batches of the run's own encoding of up to `rows` training texts, as the graph takes them."""
    features = predictor.task.encode(predictor.tokenizer, texts[:rows], None, predictor.labels, predictor.max_length,
                                     use_cache=False, long_text=predictor.long_text)
    batches = []
    for start in range(0, len(features), batch_size):
        batch = features.batch(list(range(start, min(start + batch_size, len(features)))))
        batches.append({name: batch[name].numpy().astype(np.int64) for name in input_names})
    if not batches:
        raise UserError("quantize --mode static: the run's training split is empty; nothing to calibrate on")
    return batches
