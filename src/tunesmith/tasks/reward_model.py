"""reward-model: a scalar scorer of answers, trained on chosen/rejected pairs.

The model reads a prompt and an answer as one text pair and gives one number, the answer's
reward. Training is Bradley-Terry (Ouyang et al. 2022), as TRL's RewardTrainer computes it
(tests/test_preference.py runs both on the same batch):

    -log σ(r(prompt, chosen) - r(prompt, rejected) - margin)

with `margin` 0 unless the data has a `margin` column (how much better the chosen answer is,
Llama 2's margin loss). Held-out pairs give the pair accuracy (the share ranked the right way)
and the mean margin, beside the untuned model's (its head is new: near chance). The body can
be an encoder (the default MiniLM: fast on a CPU) or a causal LM; the folder loads as
`AutoModelForSequenceClassification` with one label. `predict` and `/v1/predict` score
(prompt, answer) pairs; `/v1/score` scores several answers to one prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.data.batching import Features, collate_rows
from tunesmith.data.checks import CheckReport, splits_report
from tunesmith.errors import UserError
from tunesmith.tasks import TaskDefaults, register_task
from tunesmith.tasks.causal_lm import assemble_splits, token_length_facts
from tunesmith.tasks.reranker import Reranker


@dataclass
class PairRewards:
    """The scores of each held-out pair's chosen and rejected answer, and its margin."""

    chosen: np.ndarray
    rejected: np.ndarray
    margin: np.ndarray


def prompt_text(prompt) -> str:
    """A prompt (a message list) as the first text of the pair: the turns, one per line."""
    if isinstance(prompt, str):
        return prompt
    turns = [dict(m) for m in prompt]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n".join(f"{m['role']}: {m['content']}" for m in turns)


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    return -F.logsigmoid(chosen - rejected - margin).mean()


class RewardModel(TaskDefaults):
    name = "reward-model"
    pipeline_tag = "text-classification"  # a sequence classifier with one output
    peft_task_type = "SEQ_CLS"
    default_model = "minilm"
    exportable = True  # a (prompt, answer) pair's token ids in, one logit out
    quantisable = True
    answer = "regression"  # /v1/predict: {"score": ...} per (prompt, answer) pair
    input_kind = "text_pair"
    scores_answers = True  # mounts /v1/score: one prompt, several answers
    metrics_higher_is_better = {"pair_accuracy": True, "margin": True, "loss": False}
    default_metric = "pair_accuracy"
    has_baseline = True
    baseline_name = "the untuned model (its new head scores near chance)"
    methods = Reranker.methods  # a loss of its own over pairs: full or LoRA, as for the reranker
    train_defaults = {"method": "full", "batch_size": 8}
    sequences_per_example = 2
    default_max_length = 256

    # ---- data -----------------------------------------------------------------------------
    def load_data(self, cfg):
        from tunesmith.data.splits import Splits
        from tunesmith.tasks.preference import drop_unusable, is_feedback, read_pairs

        if not cfg.data:
            raise UserError("--data: give a CSV/JSONL/Parquet file with prompt, chosen and rejected columns")
        train, val, test, notes, warnings = assemble_splits(cfg, lambda source: read_pairs(source, cfg.encoding),
                                                            drop_unusable)
        if is_feedback(train.texts[0]):
            raise UserError(f"{cfg.data}: answers marked good or bad, not ranked pairs; a reward model trains on "
                            "prompt, chosen and rejected (or tune the language model itself with --task preference "
                            "--loss kto)")
        return Splits(train, val, test, [], "preference pair", "", notes=notes, warnings=warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8"):
        from tunesmith.tasks.preference import drop_unusable, is_feedback, read_pairs

        tables = read_pairs(source, encoding)
        examples = tables.get("all") or tables.get("test")
        if examples is None or is_feedback(examples.texts[0]):
            raise UserError(f"{source}: give prompt, chosen and rejected columns to score a reward model")
        return drop_unusable(examples, "data")[0]

    def check(self, splits, tokenizer, max_length: int) -> CheckReport:
        report = splits_report(splits)
        if tokenizer is None:
            return report
        pairs = [(prompt_text(p["prompt"]), p[side]) for part in (splits.train, splits.val, splits.test)
                 for p in part.texts for side in ("chosen", "rejected")]
        lengths = [len(tokenizer(a, b)["input_ids"]) for a, b in pairs]
        cut = sum(n > max_length for n in lengths)
        report.facts["token_lengths"] = token_length_facts(lengths, max_length, cut,
                                                           sum(max(0, n - max_length) for n in lengths))
        if cut:
            report.warnings.append(f"{cut} prompt-answer pairs are longer than max_length {max_length}: the longer "
                                   "text is cut first (raise --max-length)")
        return report

    # ---- model ----------------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        from transformers import AutoModelForSequenceClassification

        from tunesmith.models import load_tokenizer, with_new_head

        # A causal LM's classifier reads the last token that is not padding: it must know the pad id.
        tokenizer = load_tokenizer(source)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return with_new_head(AutoModelForSequenceClassification, source, ["reward"], pad_token_id=pad)

    def load_model(self, folder: str):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder, use_safetensors=True)  # never unpickled

    def load_processor(self, source: str, cfg=None):
        from tunesmith import models

        tokenizer = models.load_tokenizer(source)
        if tokenizer.pad_token is None:  # a causal LM's tokenizer: pad with its end-of-text token
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    # ---- features, loss, prediction, metrics ---------------------------------------------
    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        """(prompt, answer) pairs as they are (predict, serve); preference pairs as their chosen
        and rejected (prompt, answer) pairs, side by side."""
        from tunesmith.data.tokens import tokenize_pairs

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        if not inputs or not isinstance(inputs[0], dict):
            ids, types = tokenize_pairs(tokenizer, [tuple(x) for x in inputs], max_length, use_cache=use_cache)
            return Features([{"input_ids": i, **({"token_type_ids": t} if types else {})}
                             for i, t in zip(ids, types or [None] * len(ids))], pad_id)
        texts = [(prompt_text(p["prompt"]), p[side]) for p in inputs for side in ("chosen", "rejected")]
        ids, types = tokenize_pairs(tokenizer, texts, max_length, use_cache=use_cache)
        rows = []
        for k, pair in enumerate(inputs):
            row = {"chosen": ids[2 * k], "rejected": ids[2 * k + 1], "margin": float(pair.get("margin") or 0.0),
                   "length": max(len(ids[2 * k]), len(ids[2 * k + 1]))}
            if types:
                row["types"] = (types[2 * k], types[2 * k + 1])
            rows.append(row)
        return Features(rows, pad_id, collate=lambda batch: collate_pairs(batch, pad_id))

    def training_loss(self, model, batch, processor=None):
        n = len(batch["margin"])
        rewards = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}).logits
        chosen, rejected = rewards[:n, 0], rewards[n:, 0]
        return bradley_terry(chosen, rejected, batch["margin"]), {
            "pair_accuracy": float((chosen > rejected).float().mean()),
            "margin": float((chosen - rejected).mean().detach())}

    def predict(self, model, features: Features, batch_size: int = 32):
        """Scores of (prompt, answer) pairs, or each preference pair's two scores."""
        from tunesmith.forward import predict_logits

        if not features.rows or "chosen" not in features.rows[0]:
            return predict_logits(model, features, batch_size)[:, 0]
        flat = [{"input_ids": row[side], **({"token_type_ids": row["types"][k]} if "types" in row else {})}
                for row in features.rows for k, side in enumerate(("chosen", "rejected"))]
        scores = predict_logits(model, Features(flat, features.pad_id), batch_size)[:, 0]
        return PairRewards(scores[0::2], scores[1::2], np.array([row["margin"] for row in features.rows]))

    def metrics(self, targets, outputs: PairRewards, labels) -> dict:
        chosen, rejected = torch.as_tensor(outputs.chosen), torch.as_tensor(outputs.rejected)
        return {"pair_accuracy": float((chosen > rejected).float().mean()),
                "margin": float((chosen - rejected).mean()),
                "loss": float(bradley_terry(chosen, rejected, torch.as_tensor(outputs.margin))),
                "count": len(chosen)}

    def summary(self, metrics: dict) -> str:
        return (f"pair accuracy {metrics['pair_accuracy']:.3f}, margin {metrics['margin']:.3f}, loss "
                f"{metrics['loss']:.4f} ({metrics['count']} pairs)")

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        return {**self.metrics(test_targets, self.predict(model, test), labels),
                "description": "the untuned model: the pretrained body under its new, random head"}

    # ---- `predict` on a file, serving -----------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        from tunesmith.data.sources import read_source

        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV or JSONL file of prompt and answer columns")
        columns = {str(c).lower(): c for c in table.frame.columns}
        prompt = text_col or columns.get("prompt")
        answer = text_pair_col or next((columns[n] for n in ("answer", "completion", "response") if n in columns), None)
        if prompt not in table.frame.columns or answer not in table.frame.columns:
            raise UserError(f"{path}: cannot tell the prompt and the answer columns; columns are: "
                            f"{', '.join(map(str, table.frame.columns))}; name them prompt and answer")
        rows = table.frame.to_dict("records")
        return rows, [(str(r[prompt]), str(r[answer])) for r in rows]

    def write_predictions(self, path, rows, outputs, labels) -> None:
        from tunesmith.forward import write_rows

        write_rows(path, [{**row, "score": round(float(s), 6)} for row, s in zip(rows, outputs)])

    def serve_input(self, value, pairs: bool):
        if not isinstance(value, dict) or not {"text", "text_pair"} <= set(value):
            raise ValueError('a reward model scores a prompt and an answer: give {"text": prompt, "text_pair": answer}')
        return (value["text"], value["text_pair"])

    def sample_input(self, text: str, pairs: bool) -> dict:
        return {"text": text, "text_pair": text[::-1]}

    def output_rows(self, outputs) -> list:
        return list(outputs)

    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict:
        return {"score": float(row)}


def collate_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """The chosen (prompt, answer) pairs, then the rejected ones, in one padded batch."""
    flat = []
    for side, k in (("chosen", 0), ("rejected", 1)):
        for row in rows:
            flat.append({"input_ids": row[side], **({"token_type_ids": row["types"][k]} if "types" in row else {})})
    batch = collate_rows(flat, pad_id)
    batch["margin"] = torch.tensor([row["margin"] for row in rows], dtype=torch.float32)
    return batch


register_task(RewardModel())
