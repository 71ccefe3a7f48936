"""causal-lm: instruction, chat and plain-text tuning of a causal language model (SFT).

An example is a conversation (a list of {role, content}) or a plain text (data/conversations.py).
The loss covers the assistant turns only (or every token with --train-on-prompt); the
validation metric is the held-out loss, and the test report adds perplexity and, for rows
with a reference answer, exact match and ROUGE-L of generated answers: for the base model
(the baseline) and the tuned one, with a few samples from each side by side.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pydantic import BaseModel, Field

from tunesmith.data import conversations as conv
from tunesmith.data.batching import IGNORE, Features, collate_rows, inference_batches
from tunesmith.data.checks import CheckReport, _where, longer_max_length, splits_report
from tunesmith.data.labeled import Examples
from tunesmith.data.sources import read_source
from tunesmith.data.split import dedupe
from tunesmith.data.splits import Splits
from tunesmith.errors import UserError
from tunesmith.generation import GenerationSettings, answer_scores, generate
from tunesmith.forward import evaluating
from tunesmith.tasks import TaskDefaults, register_task
from tunesmith.tasks.token_logprobs import answer_logprobs, mean_answer_loss


class ChatSettings(BaseModel):
    """causal-lm: which tokens train and how rows are filled."""

    train_on_prompt: bool = Field(False, description="causal-lm: train on every token, not only the assistant's answers.")
    packing: bool = Field(False, description="causal-lm: pack short training examples into max_length rows "
                          "(examples never attend to each other).")

class AnswerSettings(BaseModel):
    """causal-lm and preference: the answers generated in evaluation and predict."""

    eval_answers: int = Field(20, ge=0, description="causal-lm, preference: test prompts answered for exact match and "
                              "ROUGE-L (base and tuned model); 0: none.")
    max_new_tokens: int = Field(128, gt=0, description="causal-lm, preference: longest generated answer in evaluation "
                                "and predict.")

LOSS_BATCH = 8  # rows per scoring batch (the loss never holds full-vocabulary logits for them all)
SAMPLES = 3  # generated answers shown in the report, base and tuned side by side


@dataclass
class ChatProcessor:
    """The tokenizer and how conversations become rows; saved beside the model (the
    tokenizer's files), the settings come back from the run's config."""

    tokenizer: object
    train_on_prompt: bool = False
    packing: bool = False
    eval_answers: int = 20
    max_new_tokens: int = 128
    encoder_decoder = False  # a decoder-only model's; text-to-text's other family (tasks/seq2seq.py) says True

    def save_pretrained(self, folder: str) -> None:
        self.tokenizer.save_pretrained(folder)

    def generation(self) -> GenerationSettings:
        """How evaluation and `predict` generate answers (greedy, up to max_new_tokens)."""
        return GenerationSettings(max_new_tokens=self.max_new_tokens)

    def prompt_messages(self, conversation):
        """What the model reads for a conversation: itself here; text-to-text runs frame the
        user's text in their prompt template."""
        return conversation

    def prompt_text(self, conversation) -> str:
        """The prompt a conversation becomes, in the model's chat format, ready to answer."""
        return conv.render_prompt(self.tokenizer, self.prompt_messages(conversation))

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]  # the chat format has its own

    def generate(self, model, texts: list[str], settings: GenerationSettings, stream=None) -> list[str]:
        """Answers to prompts (`prompt_text`'s)."""
        return generate(model, self.tokenizer, texts, settings, stream)


def conversation_key(conversation) -> str:
    return json.dumps(conversation, sort_keys=True, ensure_ascii=False)


def as_conversation(value):
    """A conversation as stored in a run's split files (JSON lists come back as tuples)."""
    if isinstance(value, str):
        return value
    return [dict(m) for m in value]


def read_conversations(source: str, encoding: str, text_col: str | None = None) -> dict[str, Examples]:
    """Every split of a source as conversations (rows that cannot train are kept; see
    `drop_untrainable`). `text_col` names a chat, instruction or text column explicitly."""
    out = {}
    for split, table in read_source(source, encoding).items():
        frame = table.frame
        if text_col and text_col not in frame.columns:
            raise UserError(f"--text-col {text_col}: no such column in {table.source} "
                            f"(columns: {', '.join(frame.columns)})")
        columns = [text_col] if text_col else list(frame.columns)
        layout = conv.detect_layout(columns, table.source) if not text_col else (
            "chat" if text_col.lower() in conv.CHAT_COLUMNS else "text")
        records = frame.to_dict("records")
        if text_col:
            records = [{("messages" if layout == "chat" else "text"): r[text_col]} for r in records]
        texts = [conv.row_to_conversation(r, layout, table.where(i)) for i, r in enumerate(records)]
        out[split] = Examples(texts, [""] * len(texts), table.source, [table.where(i) for i in range(len(texts))])
    return out


def drop_untrainable(examples: Examples, name: str) -> tuple[Examples, list[str]]:
    """Rows with nothing to learn (empty response, no final assistant turn), dropped with
    one warning per kind of problem naming where."""
    problems: dict[str, list[int]] = {}
    for i, c in enumerate(examples.texts):
        reason = conv.problem(c)
        if reason:
            problems.setdefault(reason, []).append(i)
    bad = sorted(i for rows in problems.values() for i in rows)
    warnings = [f"{name}: {len(rows)} rows dropped: {reason} ({_where(examples, rows)})"
                for reason, rows in problems.items()]
    keep = [i for i in range(len(examples)) if i not in set(bad)]
    return examples.subset(keep), warnings


def split_examples(examples: Examples, val_fraction: float, test_fraction: float, seed: int):
    """Exact duplicates removed (so no conversation is in two splits), then a seeded random split."""
    examples, removed = dedupe(examples, conversation_key)
    order = np.random.default_rng(seed).permutation(len(examples)).tolist()
    n_val, n_test = max(1, round(len(order) * val_fraction)), max(1, round(len(order) * test_fraction))
    if len(order) - n_val - n_test < 1:
        raise UserError(f"{examples.source}: {len(order)} distinct rows; need at least 3 (train, val, test)")
    val, test, train = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
    return examples.subset(sorted(train)), examples.subset(sorted(val)), examples.subset(sorted(test)), removed


def assemble_splits(cfg, read, clean) -> tuple[Examples, Examples, Examples, list[str], list[str]]:
    """Train / val / test for the generative tasks: `read(source)` gives a source's splits,
    `clean(examples, name)` drops unusable rows with warnings; a split the source lacks is
    carved out of train (duplicates removed first), then each is sampled down to its limit.
    Returns (train, val, test, notes, warnings)."""
    splits = read(cfg.data)
    given = {"train": splits.get("all") or splits.get("train"), "val": splits.get("val"), "test": splits.get("test")}
    for key, flag in (("val", cfg.val_data), ("test", cfg.test_data)):
        if flag:
            given[key] = read(flag).get("all")
    if given["train"] is None:
        raise UserError(f"{cfg.data}: no training split found")
    warnings, notes, cleaned = [], [], {}
    for key, examples in given.items():
        if examples is not None:
            cleaned[key], dropped = clean(examples, key)
            warnings += dropped
    if "val" not in cleaned or "test" not in cleaned:
        train, val, test, removed = split_examples(cleaned["train"], cfg.val_fraction, cfg.test_fraction, cfg.seed)
        if removed:
            notes.append(f"removed {removed} exact duplicate rows before splitting")
        cleaned = {"train": train, "val": cleaned.get("val", val), "test": cleaned.get("test", test)}
    if min(len(e) for e in cleaned.values()) == 0:
        raise UserError(f"{cfg.data}: a split has no trainable rows left; see the warnings of `tunesmith check`")
    return (sample(cleaned["train"], cfg.max_train_samples, cfg.seed), sample(cleaned["val"], cfg.max_eval_samples, cfg.seed),
            sample(cleaned["test"], cfg.max_eval_samples, cfg.seed), notes, warnings)


def token_length_facts(lengths: list[int], max_length: int, truncated: int, tokens_cut: int) -> dict:
    """The `token_lengths` facts of a check report (percentiles, and what truncation cuts)."""
    arr = np.array(lengths)
    return {"count": len(arr), "p50": int(np.percentile(arr, 50)), "p90": int(np.percentile(arr, 90)),
            "p99": int(np.percentile(arr, 99)), "max": int(arr.max()), "max_length": max_length,
            "truncated": truncated, "truncated_pct": 100.0 * truncated / len(arr), "tokens_cut": tokens_cut}


def sample(examples: Examples, limit: int | None, seed: int) -> Examples:
    if limit is None or len(examples) <= limit:
        return examples
    return examples.subset(sorted(np.random.default_rng(seed).choice(len(examples), limit, replace=False).tolist()))


def load_causal_lm(source: str):
    """A pretrained causal LM in fp32, ready to train."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"--model {source}: cannot load as a causal language model ({str(exc).splitlines()[0]})") from None
    # No key/value cache in training: it is useless there, and with one transformers
    # would ignore the position_ids that keep packed examples apart.
    model.config.use_cache = False
    return model


def load_saved_causal_lm(folder: str):
    from transformers import AutoModelForCausalLM

    # use_safetensors: a run folder may come from someone else; never unpickle it.
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    model.config.use_cache = True
    return model


def answer_metrics(model, processor: ChatProcessor, inputs: list) -> dict:
    """Generated answers to the first `eval_answers` prompts that have a reference answer:
    exact match and ROUGE-L, and a few samples for the report."""
    pairs = [conv.split_reference(as_conversation(c)) for c in inputs]
    pairs = [p for p in pairs if p is not None and p[0]][: processor.eval_answers]
    if not pairs:
        return {}
    tokenizer = processor.tokenizer
    prompts = [conv.render_prompt(tokenizer, messages) for messages, _ in pairs]
    answers = generate(model, tokenizer, prompts, processor.generation())
    scores = answer_scores(answers, [reference for _, reference in pairs])
    samples = [{"prompt": messages[-1]["content"], "reference": reference, "answer": answer}
               for (messages, reference), answer in list(zip(pairs, answers))[:SAMPLES]]
    return {**scores, "samples": samples}


def read_prompts(path: str, encoding: str, text_col: str | None) -> tuple[list[dict], list]:
    """Prompts: a .txt file (one per line), or rows in any layout; an answer already in a row
    is dropped, so the model answers the prompt afresh."""
    table = read_source(path, encoding).get("all")
    if table is None:
        raise UserError(f"{path}: give a CSV, TSV, JSONL, Parquet or text file of prompts")
    rows = table.frame.to_dict("records")
    examples = read_conversations(path, encoding, text_col)["all"]
    if isinstance(examples.texts[0], str):  # plain texts: each one is a user's message
        return rows, [[{"role": "user", "content": t}] for t in examples.texts]
    prompts = []
    for c in examples.texts:
        reference = conv.split_reference(c)
        prompts.append(reference[0] if reference else c)
    return rows, prompts


class CausalLMTask(TaskDefaults):
    name = "causal-lm"
    pipeline_tag = "text-generation"
    answer = "generation"
    settings = (ChatSettings, AnswerSettings)
    peft_task_type = "CAUSAL_LM"
    metrics_higher_is_better = {"loss": False, "perplexity": False}
    default_metric = "loss"
    default_model = "smollm2"
    # A row is up to 512 tokens and the vocabulary 49k: micro-batches of 2 rows, 16 per step,
    # keep the effective batch at 32 and SmolLM2-135M LoRA training under 6 GB (4 rows: 7.8 GB;
    # 32 rows at once, the old default, over 23 GB: docs/benchmarks.md, bench/causal_memory.py).
    # On a CPU, tokens per second hardly depend on the micro-batch.
    # Three passes whatever the data's size: the more-steps-on-small-data default was measured
    # on classifiers, and a language model memorises a small instruction set quickly.
    train_defaults = {"batch_size": 2, "grad_accum": 16, "epochs": 3.0}
    generative = True  # --long-text: truncate only (a conversation keeps its start, the prompt)
    default_max_length = 512
    has_baseline = True  # the base model's loss and answers, beside the tuned model's
    baseline_name = "the model before tuning"

    def default_lr(self, method: str, model: str) -> float | None:
        return None

    # ---- data -------------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("--data: give a CSV/JSONL/Parquet file of conversations, instructions or texts")
        train, val, test, notes, warnings = assemble_splits(
            cfg, lambda source: read_conversations(source, cfg.encoding, cfg.text_col), drop_untrainable)
        layout = "text" if isinstance(train.texts[0], str) else "conversation"
        return Splits(train, val, test, [], layout, "", notes=notes, warnings=warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        splits = read_conversations(source, encoding, text_col)
        examples = splits.get("all") or splits.get("test")
        if examples is None:
            raise UserError(f"{source}: no test split found")
        examples, warnings = drop_untrainable(examples, "data")
        if not len(examples):
            raise UserError(f"{source}: no rows with an answer to score ({'; '.join(warnings)})")
        return examples

    def check(self, splits: Splits, processor, max_length: int) -> CheckReport:
        report = splits_report(splits)
        if processor is None:
            return report
        tokenizer = processor.tokenizer
        lengths, cut_rows, cut_tokens = [], [], 0
        for i, c in enumerate(splits.train.texts + splits.val.texts + splits.test.texts):
            pieces = conv.encode_conversation(tokenizer, as_conversation(c), 10**9, processor.train_on_prompt)
            n = sum(len(p.input_ids) for p in pieces)
            lengths.append(n)
            if n > max_length and not isinstance(c, str):  # plain text is cut into pieces, not lost
                cut_rows.append(i)
                cut_tokens += n - max_length
        report.facts["token_lengths"] = token_length_facts(lengths, max_length, len(cut_rows), cut_tokens)
        if cut_rows:
            report.warnings.append(
                f"{len(cut_rows)} examples are longer than max_length {max_length}: {cut_tokens} tokens would be cut "
                f"(answers lose their end); {longer_max_length(report.facts['token_lengths']['p99'], tokenizer)}")
        first = as_conversation(splits.train.texts[0])
        preview = first if isinstance(first, str) else conv.render_text(tokenizer, first)[0]
        report.facts["preview"] = preview
        if not getattr(tokenizer, "chat_template", None) and not isinstance(first, str):
            report.facts["notes"].append("the tokenizer has no chat template: the '### User:' / '### Assistant:' layout is used")
        return report

    # ---- model --------------------------------------------------------------------------------
    def load_processor(self, source: str, cfg) -> ChatProcessor:
        from tunesmith import models

        return ChatProcessor(models.load_tokenizer(source), cfg.train_on_prompt, cfg.packing, cfg.eval_answers,
                             cfg.max_new_tokens)

    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        return load_causal_lm(source)

    def load_model(self, folder: str):
        return load_saved_causal_lm(folder)

    # ---- features, outputs, metrics ----------------------------------------------------------
    def encode(self, processor, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        """Rows of token ids with labels; a conversation that ends with a user turn is a prompt
        (its answer is generated by `predict`). Packing (if chosen) is for the training split."""
        tokenizer = processor.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        rows, meta = [], []
        for index, value in enumerate(inputs):
            c = as_conversation(value)
            if not isinstance(c, str) and (not c or c[-1]["role"] != "assistant"):
                ids = tokenizer(conv.render_prompt(tokenizer, c), add_special_tokens=False)["input_ids"]
                rows.append({"input_ids": ids[-max_length:]})
                meta.append({"example": index, "prompt": True})
                continue
            for n, piece in enumerate(conv.encode_conversation(tokenizer, c, max_length, processor.train_on_prompt)):
                if augment and all(label == IGNORE for label in piece.labels[1:]):
                    continue  # nothing left to learn after truncation
                rows.append({"input_ids": piece.input_ids, "labels": piece.labels})
                # The conversation itself rides along: the answer metrics prompt with it.
                meta.append({"example": index, "prompt": False, **({"conversation": c} if n == 0 else {})})
        if augment and processor.packing:
            packed = conv.pack(rows, max_length)
            return Features(packed, pad_id, token_labels=True, collate=lambda batch: conv.collate_packed(batch, pad_id),
                            processor=processor)
        return Features(rows, pad_id, token_labels=True, meta=meta, processor=processor)

    def predict(self, model, features: Features, batch_size: int = LOSS_BATCH) -> dict:
        """Per example: the summed loss and trained-token count of scored rows, and generated
        answers for prompt rows."""
        count = 1 + max((m["example"] for m in features.meta), default=-1)
        nll, tokens = np.zeros(count), np.zeros(count, dtype=np.int64)
        answers: list[str | None] = [None] * count
        scored = [i for i, m in enumerate(features.meta) if not m["prompt"]]
        prompts = [i for i, m in enumerate(features.meta) if m["prompt"]]
        with evaluating(model) as device:
            lengths = [len(features.rows[i]["input_ids"]) for i in scored]
            for batch_idx in inference_batches(lengths, min(batch_size, LOSS_BATCH)):
                rows = [features.rows[scored[j]] for j in batch_idx]
                batch = {k: v.to(device) for k, v in collate_rows(rows, features.pad_id, token_labels=True).items()}
                logps, counts = answer_logprobs(model, **batch)
                for row_in_batch, j in enumerate(batch_idx):
                    example = features.meta[scored[j]]["example"]
                    nll[example] -= float(logps[row_in_batch])
                    tokens[example] += int(counts[row_in_batch])
        if prompts:
            tokenizer = features.processor.tokenizer
            texts = [tokenizer.decode(features.rows[i]["input_ids"]) for i in prompts]
            for i, answer in zip(prompts, generate(model, tokenizer, texts, features.processor.generation())):
                answers[features.meta[i]["example"]] = answer
        return {"nll": nll, "tokens": tokens, "answers": answers}

    def training_loss(self, model, batch: dict, processor) -> tuple[torch.Tensor, dict]:
        """The model's own loss, computed without full-vocabulary logits (tasks/token_logprobs.py)."""
        return mean_answer_loss(model, batch), {}

    def metrics(self, targets, outputs, labels) -> dict:
        total_tokens = int(outputs["tokens"].sum())
        loss = float(outputs["nll"].sum() / max(total_tokens, 1))
        return {"loss": loss, "perplexity": float(math.exp(min(loss, 50.0))), "tokens": total_tokens,
                "count": int((outputs["tokens"] > 0).sum())}

    def answer_metrics(self, model, processor: ChatProcessor, inputs: list) -> dict:
        return answer_metrics(model, processor, inputs)

    def summary(self, metrics: dict) -> str:
        line = f"loss {metrics['loss']:.4f}, perplexity {metrics['perplexity']:.2f}"
        if "rouge_l" in metrics:
            line += f", ROUGE-L {metrics['rouge_l']:.3f}, exact match {metrics['exact_match']:.3f} ({metrics['answered']} answers)"
        return line

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        """The untuned model on the test split: loss, perplexity and its answers."""
        metrics = self.metrics(test_targets, self.predict(model, test), labels)
        conversations = [m["conversation"] for m in test.meta if "conversation" in m]
        return {**metrics, **answer_metrics(model, test.processor, conversations),
                "description": "the pretrained model as it is, before tuning"}

    # ---- `predict` on a file: answers to prompts ---------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        return read_prompts(path, encoding, text_col)

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        from tunesmith.forward import write_rows

        write_rows(path, [{**row, "generated": answer} for row, answer in zip(rows, outputs["answers"])])

    # ---- serving: a prompt in, generated text out ------------------------------------------------
    def serve_input(self, value, pairs: bool):
        if not isinstance(value, str):
            raise ValueError("give a prompt (a string)")
        return [{"role": "user", "content": value}]

    def output_rows(self, outputs) -> list:
        return list(outputs["answers"])

    def serve_output(self, value, row, labels, top_k) -> dict:
        return {"generated": row}


register_task(CausalLMTask())
