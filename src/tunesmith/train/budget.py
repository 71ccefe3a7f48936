"""What a run will cost before it starts: peak memory and time per epoch, estimated from the
model's shape, the settings and the data's token lengths, and a micro-batch that fits.

The memory model is the usual one (Korthikanti et al. 2022, "Reducing activation
recomputation"), for float32 on a CPU: the weights, the gradients and AdamW's two moments
of what trains, and per transformer layer about 34 x 2 bytes of saved activations per
token and hidden unit (memory-efficient attention keeps no seq x seq scores), plus one
chunk of the loss's logits. It errs high, deliberately: the estimate exists to refuse or
shrink a run *before* the kernel kills it. Time is 2 operations per parameter and token for each
forward pass a training example costs (the method's `relative_cost`: 3 for full fine-tuning,
about 2 for LoRA or adapters, 1 for a frozen body), at the rate this machine measures for a
float32 matrix product. Only the layers' parameters count there (12 h^2 a layer): an embedding
row is looked up, not multiplied, and a large vocabulary would otherwise dominate (e5-small's
250k-piece embeddings are 96M of its 118M parameters: counted, its estimate was 14 h an epoch
for a run that took 14 minutes). Time reads the median row length, memory the 99th percentile.
"""

from __future__ import annotations

import functools

import math
import time
from dataclasses import dataclass

# Saved activations per token, hidden unit and layer, in float32: 68 in the paper's count for a
# plain transformer; LoRA's dropout and extra inputs raise it (measured: ~160 for SmolLM2 LoRA).
ACTIVATION_BYTES = 160
TRAINING_EFFICIENCY = 0.4  # share of a bare matrix product's rate that training reaches on a CPU
GB = 2**30


@dataclass
class Estimate:
    peak_bytes: float
    epoch_seconds: float | None
    tokens_per_micro_batch: int

    def line(self) -> str:
        time_part = f", about {duration(self.epoch_seconds)} per epoch on this machine" if self.epoch_seconds else ""
        return f"estimate: peak memory about {self.peak_bytes / GB:.1f} GB{time_part}"


def shape_of(source: str, parameters: int | None = None) -> dict | None:
    """The numbers the estimate needs, from the config of the model at `source` (None for a
    model without one, like the EfficientNet backbone). `parameters`: the exact count when
    the model is loaded; otherwise 12 h^2 per layer plus the embeddings."""
    from tunesmith.models import read_config

    config = read_config(source)
    config = getattr(config, "text_config", None) or config
    hidden, layers = getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)
    if not isinstance(hidden, int) or not isinstance(layers, int):
        return None
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    return {"hidden": hidden, "layers": layers, "vocab": vocab,
            "parameters": parameters or 12 * layers * hidden**2 + vocab * hidden}


def estimate(shape: dict, trainable: int, batch_size: int, row_tokens: int, rows_per_epoch: int,
             lm_loss: bool, flops: float | None = None, typical_tokens: int | None = None,
             cost: float = 3.0) -> Estimate:
    """`row_tokens`: tokens of a long row (the 99th percentile, at most max_length), which sets
    the memory; `typical_tokens`: of a typical row (the median), which sets the time;
    `lm_loss`: a language model's loss over the vocabulary (chunked: one chunk at a time);
    `cost`: one training example in forward passes (the method's `relative_cost`: 3 for full
    fine-tuning, a forward and a backward of twice its work; 1 for a frozen body)."""
    from tunesmith.tasks.token_logprobs import CHUNK

    tokens = batch_size * row_tokens
    weights = 4 * shape["parameters"]
    optimizer = 16 * trainable  # the weight's gradient, two AdamW moments, the update
    activations = ACTIVATION_BYTES * tokens * shape["hidden"] * shape["layers"]
    logits = 3 * 4 * min(tokens, CHUNK) * shape["vocab"] if lm_loss else 0
    runtime = 600 * 2**20  # Python, torch and the tokenizer
    seconds = None
    if flops:
        # A forward pass is 2 operations (a multiply and an add) per weight and token.
        computing = 12 * shape["layers"] * shape["hidden"] ** 2  # the layers' matrices; embeddings are looked up
        if lm_loss:  # the output projection over the vocabulary is a matrix product
            computing += shape["vocab"] * shape["hidden"]
        per_token = 2 * cost * computing
        seconds = per_token * (typical_tokens or row_tokens) * rows_per_epoch / (flops * TRAINING_EFFICIENCY)
    return Estimate(weights + optimizer + activations + logits + runtime, seconds, tokens)


def fitting_batch(shape: dict, trainable: int, batch_size: int, grad_accum: int, row_tokens: int, lm_loss: bool,
                  available: float) -> tuple[int, int] | None:
    """The largest micro-batch (halving from `batch_size`) whose estimate fits in `available`
    bytes, with the accumulation that keeps the effective batch; None if one row is too many."""
    while batch_size >= 1:
        if estimate(shape, trainable, batch_size, row_tokens, 0, lm_loss).peak_bytes <= available:
            return batch_size, grad_accum
        if batch_size == 1:
            return None
        batch_size, grad_accum = math.ceil(batch_size / 2), grad_accum * 2
    return None


def available_memory() -> float | None:
    """Bytes the kernel says a new allocation can still get (MemAvailable), on Linux."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@functools.lru_cache(maxsize=1)  # one process, one machine: timed once
def measured_flops() -> float:
    """Float32 operations per second of a 512 x 512 matrix product here: the best of three
    windows of 50 ms after a warm-up. A cold first window reads half the rate or less (the
    thread pool and the clock speed are still waking up), which doubled the time estimate."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best, warm_until = 0.0, time.perf_counter() + 0.05
    while time.perf_counter() < warm_until:
        torch.mm(a, b)
    for _ in range(3):
        runs, started = 0, time.perf_counter()
        while time.perf_counter() - started < 0.05:
            torch.mm(a, b)
            runs += 1
        best = max(best, 2 * 512**3 * runs / (time.perf_counter() - started))
    return best


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan(cfg, task, source: str, token_lengths: dict | None, rows: int, parameters: int | None = None) -> list[str]:
    """The lines `check` and `train` print about cost."""
    costing = _costing(cfg, task, source, token_lengths, rows, parameters)
    return [] if costing is None else [costing[0].line() + f" (micro-batch {cfg.batch_size})"]


def epoch_seconds(cfg, task, source: str, token_lengths: dict | None, rows: int) -> float | None:
    """The estimated seconds of one training epoch over `rows` rows; None when unknown."""
    costing = _costing(cfg, task, source, token_lengths, rows)
    return None if costing is None else costing[0].epoch_seconds


def fit_to_memory(cfg, task, source: str, token_lengths: dict | None, rows: int) -> tuple[list[str], tuple | None]:
    """For `train`: the cost lines (`plan`'s) and, when the estimate says the micro-batch will not
    fit in the memory available now, a smaller one: (batch_size, grad_accum, the line that says
    so), halved (accumulation doubled: the same effective batch) until it fits; None when the run
    fits as it is. The cost line is for the micro-batch that will run. A run where one row does
    not fit is refused."""
    from tunesmith.errors import UserError

    costing = _costing(cfg, task, source, token_lengths, rows)
    if costing is None:
        return [], None
    found, shape, trainable, row_tokens, lm_loss = costing
    available = available_memory()
    if available is None or found.peak_bytes <= available:
        return [found.line() + f" (micro-batch {cfg.batch_size})"], None
    fit = fitting_batch(shape, trainable, cfg.batch_size, cfg.grad_accum, row_tokens, lm_loss, available)
    if fit is None:
        raise UserError(f"--max-length {cfg.resolved_max_length()}: one row of this model needs more memory than "
                        f"the {available / GB:.1f} GB available; lower --max-length or use a smaller --model")
    fitted = _costing(cfg, task, source, token_lengths, rows, shape=shape, batch_size=fit[0])[0]
    why = (f"memory: {found.peak_bytes / GB:.1f} GB estimated but {available / GB:.1f} GB available; "
           f"micro-batch {cfg.batch_size} -> {fit[0]} with --grad-accum {cfg.grad_accum} -> {fit[1]} "
           "(the same effective batch)")
    return [fitted.line() + f" (micro-batch {fit[0]})"], (*fit, why)


def _costing(cfg, task, source: str, token_lengths: dict | None, rows: int, parameters: int | None = None,
             shape: dict | None = None, batch_size: int | None = None):
    """The estimate of a run (at `batch_size`, else the config's), with the shape facts
    `fit_to_memory` reuses (`shape`: already read); None when the model's shape or the token
    lengths are unknown."""
    from tunesmith.methods import METHODS

    shape = shape or shape_of(source, parameters)
    if shape is None or not token_lengths:
        return None
    sequences = task.sequences_per_example  # a preference pair is two
    # --long-text chunk: a long text is up to max_windows rows of max_length in one forward
    longest = cfg.resolved_max_length() * (cfg.max_windows if cfg.long_text == "chunk" else 1)
    row_tokens = sequences * min(int(token_lengths["p99"]), longest)
    lm_loss = task.peft_task_type == "CAUSAL_LM"
    # What trains is known only once the method is applied: count it all (errs high for LoRA).
    trainable = shape["parameters"]
    typical = sequences * min(int(token_lengths.get("p50", token_lengths["p99"])), longest)
    found = estimate(shape, trainable, batch_size or cfg.batch_size, row_tokens, rows, lm_loss, measured_flops(),
                     typical, METHODS[cfg.method].relative_cost)
    return found, shape, trainable, row_tokens, lm_loss
