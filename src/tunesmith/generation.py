"""Text generation from a causal LM, and how generated answers compare with references.

Used by `tunesmith generate`, `predict` on a prompt file, and the answer metrics of `eval`
(exact match and ROUGE-L against reference answers, base model and tuned model alike).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

from tunesmith.forward import evaluating

GENERATE_BATCH = 8  # prompts decoded together (left-padded); bigger batches pad more on CPU


@dataclass
class GenerationSettings:
    max_new_tokens: int = 128
    temperature: float = 0.0  # 0: greedy (deterministic); > 0: sampling
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)  # generation ends at the first of these (not included)
    seed: int = 0
    num_beams: int = 1  # > 1: beam search (greedy otherwise); not with sampling or streaming
    length_penalty: float = 1.0  # beam search: > 1 favours longer outputs, < 1 shorter
    no_repeat_ngram_size: int = 0  # > 0: no n-gram of this size twice in one output


def generate(model, tokenizer, prompts: list[str], settings: GenerationSettings, stream=None) -> list[str]:
    """Answers to rendered prompts (text already in the model's chat format). With `stream`
    (a callable taking text pieces) and one prompt, the answer is passed on as it is decoded."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    options = {**generate_options(settings, tokenizer), "pad_token_id": pad_id}
    answers = []
    # The seed applies to this call only: validation in the middle of training must not reset
    # the generator that training samples from (dropout, GRPO's completions).
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices), evaluating(model) as device:
        torch.manual_seed(settings.seed)
        for start in range(0, len(prompts), GENERATE_BATCH):
            chunk = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts[start : start + GENERATE_BATCH]]
            width = max(len(ids) for ids in chunk)
            # Left padding: every prompt ends at the same position, where generation starts.
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, ids in enumerate(chunk):
                input_ids[i, width - len(ids):] = torch.tensor(ids)
                mask[i, width - len(ids):] = 1
            streamer = None
            if stream is not None and len(prompts) == 1:
                streamer = CallbackStreamer(tokenizer, stream, settings.stop)
            out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                                 streamer=streamer, **options)
            for row in out[:, width:]:
                answers.append(cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), settings.stop))
    return answers


def generate_options(settings: GenerationSettings, tokenizer) -> dict:
    """`model.generate` keyword arguments for `settings` (decoder-only and encoder-decoder alike)."""
    sampling = settings.temperature > 0
    options = dict(max_new_tokens=settings.max_new_tokens, do_sample=sampling, use_cache=True,
                   eos_token_id=tokenizer.eos_token_id)
    if sampling:
        options.update(temperature=settings.temperature, top_p=settings.top_p)
    else:  # greedy: clear any sampling defaults the model's generation_config carries
        options.update(temperature=None, top_p=None, top_k=None)
    if settings.num_beams > 1:
        options.update(num_beams=settings.num_beams, length_penalty=settings.length_penalty, early_stopping=True)
    if settings.no_repeat_ngram_size > 0:
        options.update(no_repeat_ngram_size=settings.no_repeat_ngram_size)
    if settings.stop:
        options.update(stop_strings=list(settings.stop), tokenizer=tokenizer)
    return options


def cut_at_stop(text: str, stop: list[str]) -> str:
    positions = [text.find(s) for s in stop if s and s in text]
    return text[: min(positions)] if positions else text


class CallbackStreamer:
    """Hands decoded text to `emit` as tokens arrive (skipping the prompt and stop strings)."""

    def __init__(self, tokenizer, emit, stop: list[str]):
        from transformers import TextStreamer

        self._inner = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self._inner.on_finalized_text = self._on_text
        self._emit, self._stop, self._sent = emit, stop, ""

    def _on_text(self, text: str, stream_end: bool = False) -> None:
        self._sent += text
        clean = cut_at_stop(self._sent, self._stop)
        if len(clean) < len(self._sent):  # a stop string arrived: emit what precedes it only
            text = text[: max(0, len(text) - (len(self._sent) - len(clean)))]
            self._sent = clean
        if text:
            self._emit(text)

    def put(self, value) -> None:
        self._inner.put(value)

    def end(self) -> None:
        self._inner.end()


# ---- answers vs references ----------------------------------------------------------------------

def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when equal after lower-casing and collapsing whitespace."""
    return float(_normalise(prediction) == _normalise(reference))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased word tokens (the longest common subsequence, Lin 2004)."""
    pred, ref = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    if not pred or not ref:
        return float(pred == ref)
    previous = [0] * (len(ref) + 1)
    for p in pred:
        current = [0]
        for j, r in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if p == r else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def answer_scores(predictions: list[str], references: list[str]) -> dict:
    n = max(len(predictions), 1)
    return {
        "exact_match": sum(map(exact_match, predictions, references)) / n,
        "rouge_l": sum(map(rouge_l, predictions, references)) / n,
        "answered": len(predictions),
    }
