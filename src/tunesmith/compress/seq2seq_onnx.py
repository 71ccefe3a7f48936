"""ONNX export of an encoder-decoder run (summarization, translation): three graphs, in the
layout and with the input and output names Optimum's ORTModelForSeq2SeqLM reads.

- `encoder_model.onnx`: input_ids, attention_mask -> last_hidden_state;
- `decoder_model.onnx`, the first step: input_ids (the decoder's), encoder_hidden_states,
  encoder_attention_mask -> logits and every layer's key/value cache
  (`present.{i}.decoder.key`, ... `present.{i}.encoder.value`);
- `decoder_with_past_model.onnx`, every later step: the same inputs plus the cache so far
  (`past_key_values.{i}.decoder.key`, ...) -> logits and the grown self-attention cache (the
  cross-attention cache is the encoder's and never changes).

The graphs are traced by PyTorch's TorchScript exporter: the torch.export one fails on T5's
attention reshape (torch 2.13). They are kept only if greedy decoding through them, step by
step with the cache, picks the same tokens as PyTorch on sample texts and their logits agree
within TOLERANCE; otherwise nothing is written.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from tunesmith.data.batching import collate
from tunesmith.compress.onnx_export import SAMPLE_TEXTS, TOLERANCE, _quiet_exporter
from tunesmith.errors import UserError

FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")
CHECK_STEPS = 8  # decoding steps compared: past lengths 1..7 exercise the cache and relative positions
OPSET = 17


class _Encoder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class _Decoder(torch.nn.Module):
    """One decoding step; with `with_past`, the cache comes in as flat tensors, four per layer
    (self key, self value, cross key, cross value)."""

    def __init__(self, model, with_past: bool):
        super().__init__()
        self.model, self.with_past = model, with_past
        self.layers = model.config.num_decoder_layers if hasattr(model.config, "num_decoder_layers") else \
            model.config.decoder_layers

    def forward(self, input_ids, encoder_hidden_states, encoder_attention_mask, *past):
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        if self.with_past:
            for i in range(self.layers):
                cache.self_attention_cache.update(past[4 * i], past[4 * i + 1], i)
                cache.cross_attention_cache.update(past[4 * i + 2], past[4 * i + 3], i)
                cache.is_updated[i] = True  # the cross-attention keys are the encoder's: computed once
        out = self.model(encoder_outputs=(encoder_hidden_states,), attention_mask=encoder_attention_mask,
                         decoder_input_ids=input_ids, past_key_values=cache, use_cache=True)
        caches = out.past_key_values
        flat = []
        for i in range(self.layers):
            flat += [caches.self_attention_cache.layers[i].keys, caches.self_attention_cache.layers[i].values]
            if not self.with_past:
                flat += [caches.cross_attention_cache.layers[i].keys, caches.cross_attention_cache.layers[i].values]
        return (out.logits, *flat)


def cache_names(layers: int, prefix: str, cross: bool = True) -> list[str]:
    sides = ("decoder", "encoder") if cross else ("decoder",)
    return [f"{prefix}.{i}.{side}.{kind}" for i in range(layers) for side in sides for kind in ("key", "value")]


def export_seq2seq(run) -> tuple[list[Path], float]:
    """The three graphs of `run`'s encoder-decoder in its model folder (all or none); returns
    their paths and the largest logit difference from PyTorch over the checked steps."""
    from tunesmith.inference import Predictor
    from tunesmith.io import atomic_path
    from tunesmith.runtimes import require_runtime

    require_runtime()
    predictor = Predictor.from_run(run)
    model, processor = predictor.model.eval(), predictor.tokenizer
    ids = [processor.prompt_ids(processor.prompt_text(t))[: predictor.max_length] for t in SAMPLE_TEXTS]
    batch = collate(ids, processor.tokenizer.pad_token_id)
    paths = [run.model_dir / name for name in FILES]
    with atomic_path(paths[0]) as encoder, atomic_path(paths[1]) as first, atomic_path(paths[2]) as later:
        try:
            with _quiet_exporter(), torch.no_grad():
                _trace(model, batch, (encoder, first, later))
        except Exception as error:
            while error.__cause__ is not None:
                error = error.__cause__
            raise UserError(f"export --format onnx: the encoder-decoder could not be traced "
                            f"({str(error).splitlines()[0][:300]}); report this with the run's config.yaml") from error
        difference, same_tokens = _compare(model, batch, (encoder, first, later))
        if not same_tokens or difference > TOLERANCE:
            raise UserError(f"export --format onnx: decoding through ONNX Runtime differs from PyTorch (largest logit "
                            f"difference {difference:.2e}, limit {TOLERANCE}); the export was not kept")
    return paths, difference


def _start(model, rows: int) -> torch.Tensor:
    return torch.full((rows, 1), model.config.decoder_start_token_id, dtype=torch.long)


def _trace(model, batch: dict, paths: tuple[Path, Path, Path]) -> None:
    encoder, decoder, with_past = _Encoder(model).eval(), _Decoder(model, False).eval(), _Decoder(model, True).eval()
    layers = decoder.layers
    torch.onnx.export(encoder, (batch["input_ids"], batch["attention_mask"]), str(paths[0]), opset_version=OPSET,
                      dynamo=False, input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"],
                      dynamic_axes={name: {0: "batch", 1: "source"} for name in
                                    ("input_ids", "attention_mask", "last_hidden_state")})
    hidden = encoder(batch["input_ids"], batch["attention_mask"])
    start = _start(model, len(hidden))
    common = ["input_ids", "encoder_hidden_states", "encoder_attention_mask"]
    common_axes = {"input_ids": {0: "batch"}, "encoder_hidden_states": {0: "batch", 1: "source"},
                   "encoder_attention_mask": {0: "batch", 1: "source"}, "logits": {0: "batch"}}
    present = cache_names(layers, "present")
    cache_axes = {name: {0: "batch", 2: "past" if ".decoder." in name else "source"} for name in present}
    torch.onnx.export(decoder, (start, hidden, batch["attention_mask"]), str(paths[1]), opset_version=OPSET,
                      dynamo=False, input_names=common, output_names=["logits", *present],
                      dynamic_axes={**common_axes, **cache_axes})
    past = decoder(start, hidden, batch["attention_mask"])[1:]
    past_names = cache_names(layers, "past_key_values")
    past_axes = {name: {0: "batch", 2: "past" if ".decoder." in name else "source"} for name in past_names}
    present_self = cache_names(layers, "present", cross=False)
    step = torch.argmax(decoder(start, hidden, batch["attention_mask"])[0][:, -1:], -1)
    torch.onnx.export(with_past, (step, hidden, batch["attention_mask"], *past), str(paths[2]), opset_version=OPSET,
                      dynamo=False, input_names=[*common, *past_names], output_names=["logits", *present_self],
                      dynamic_axes={**common_axes, **past_axes,
                                    **{name: {0: "batch", 2: "total"} for name in present_self}})


def _compare(model, batch: dict, paths: tuple[Path, Path, Path]) -> tuple[float, bool]:
    """Greedy decoding for CHECK_STEPS steps through the graphs and through PyTorch (the whole
    decoder re-run on the tokens so far, no cache): the largest logit difference, and whether
    every step picked the same tokens."""
    import onnxruntime as ort

    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in paths]
    feed = {k: v.numpy() for k, v in batch.items()}
    hidden = sessions[0].run(None, feed)[0]
    common = {"encoder_hidden_states": hidden, "encoder_attention_mask": feed["attention_mask"]}
    tokens = _start(model, len(hidden)).numpy()
    outputs = sessions[1].run(None, {"input_ids": tokens, **common})
    layers = (len(outputs) - 1) // 4
    cache = dict(zip(cache_names(layers, "past_key_values"), outputs[1:]))
    largest, same = 0.0, True
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(CHECK_STEPS):
            logits = outputs[0][:, -1]
            expected = model(encoder_outputs=(torch.from_numpy(hidden),), attention_mask=batch["attention_mask"],
                             decoder_input_ids=torch.from_numpy(tokens), use_cache=False).logits[:, -1].numpy()
            largest = max(largest, float(np.abs(logits - expected).max()))
            same &= bool((logits.argmax(-1) == expected.argmax(-1)).all())
            tokens = np.concatenate([tokens, expected.argmax(-1)[:, None]], 1)
            if step + 1 == CHECK_STEPS:
                break
            outputs = sessions[2].run(None, {"input_ids": tokens[:, -1:], **common, **cache})
            for i in range(layers):
                cache[f"past_key_values.{i}.decoder.key"] = outputs[1 + 2 * i]
                cache[f"past_key_values.{i}.decoder.value"] = outputs[2 + 2 * i]
    return largest, same
