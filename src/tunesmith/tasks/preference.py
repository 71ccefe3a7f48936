"""preference: preference tuning of a causal LM (DPO, Rafailov et al. 2023, and its family).

An example is a prompt with a chosen and a rejected answer. The default loss is the sigmoid DPO loss

    -log sigmoid(beta * ((log p(chosen) - log p_ref(chosen)) - (log p(rejected) - log p_ref(rejected))))

where log p sums the answer tokens' log-probabilities (prompt tokens are masked as in SFT);
`--loss` picks another of the family (tasks/preference_losses.py: ipo, hinge, robust, and the
reference-free simpo and orpo).

The reference is the starting model. Its log-probabilities never change, so they are computed
once, with the pristine model, before the method is applied (`score_reference`), and stored
with the features: no second copy of the model is held during training (LoRA or full alike)
and each step runs one forward pass, not two. This is TRL's `precompute_ref_log_probs`, made
the default; the loop stays the plain loop every task uses. For the test metrics of a saved
run the reference is loaded again from the run's base model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from pydantic import BaseModel, Field

from tunesmith.data import conversations as conv
from tunesmith.data.batching import IGNORE, Features, inference_batches
from tunesmith.data.checks import CheckReport, longer_max_length, splits_report
from tunesmith.data.labeled import Examples
from tunesmith.data.sources import read_source
from tunesmith.data.splits import Splits
from tunesmith.errors import UserError
from tunesmith.forward import evaluating
from tunesmith.tasks import TaskDefaults, register_task
from tunesmith.tasks.causal_lm import (AnswerSettings, CausalLMTask, ChatProcessor, answer_metrics, assemble_splits, load_causal_lm,
                                       load_saved_causal_lm, read_prompts, token_length_facts)
from tunesmith.tasks import kto
from tunesmith.tasks.preference_losses import REFERENCE_FREE, PairScores, pair_losses
from tunesmith.tasks.token_logprobs import answer_logprobs


class DpoSettings(BaseModel):
    """preference: the loss and its strength."""

    loss: Literal["sigmoid", "ipo", "hinge", "robust", "simpo", "orpo", "kto"] = Field(
        "sigmoid", description="preference: sigmoid (DPO), ipo, hinge, robust (noisy labels), simpo or orpo (no "
        "reference model; orpo adds the SFT loss on the chosen answer); kto: answers marked good or bad.")
    dpo_beta: float = Field(0.1, gt=0, description="preference: the loss's beta (DPO: how far the policy may move "
                            "from the reference, smaller = further; SimPO's paper uses 2, ORPO's 0.1).")
    preference_noise: float = Field(0.0, ge=0, lt=0.5, description="preference, loss robust: the share of pairs "
                                    "whose labels are thought flipped.")
    simpo_gamma: float = Field(0.5, ge=0, description="preference, loss simpo: the target reward margin.")
    desirable_weight: float = Field(1.0, gt=0, description="preference, loss kto: the weight of good answers' loss.")
    undesirable_weight: float = Field(1.0, gt=0, description="preference, loss kto: the weight of bad answers' loss.")

SCORE_BATCH = 4  # pairs per scoring batch (8 sequences)


@dataclass
class PreferenceProcessor(ChatProcessor):
    beta: float = 0.1
    reference_source: str | None = None  # the starting model, for scoring saved runs
    loss: str = "sigmoid"
    noise: float = 0.0
    gamma: float = 0.5
    weights: tuple[float, float] = (1.0, 1.0)  # kto: desirable, undesirable
    _reference: object = None

    @property
    def uses_reference(self) -> bool:
        return self.loss not in REFERENCE_FREE

    def losses(self, scores: PairScores):
        return pair_losses(self.loss, scores, self.beta, self.noise, self.gamma)

    def reference_model(self):
        """The starting model (loaded once), for reference log-probabilities of a saved run."""
        if self._reference is None:
            from transformers import AutoModelForCausalLM

            from tunesmith import models

            self._reference = AutoModelForCausalLM.from_pretrained(models.resolve(self.reference_source),
                                                                   dtype=torch.float32).eval()
        return self._reference


def row_to_pair(row: dict, where: str) -> dict:
    """{prompt: messages, chosen: text, rejected: text} from a row of strings or message lists
    (TRL's prompt/chosen/rejected, or LLaMA-Factory's conversations + chosen/rejected); or,
    for a row of one answer marked good or bad (KTO's data), {prompt, completion, label}."""
    keys = {k.lower(): k for k in row}
    if "chosen" not in keys and "rejected" not in keys:
        return row_to_feedback(row, keys, where)
    missing = [k for k in ("chosen", "rejected") if k not in keys]
    if missing:
        raise UserError(f"{where}: preference data needs 'chosen' and 'rejected' columns (and 'prompt', "
                        "unless chosen/rejected are chat message lists)")
    chosen, rejected = _answer_cell(row[keys["chosen"]], where), _answer_cell(row[keys["rejected"]], where)
    prompt_key = next((keys[k] for k in ("prompt", "conversations", "messages") if k in keys), None)
    prompt = _parse_cell(row[prompt_key], where) if prompt_key else None
    if isinstance(chosen, list):  # chat-format pairs: the shared turns are the prompt
        if prompt is None:
            prompt = chosen[:-1]
        if not chosen or chosen[-1]["role"] != "assistant" or not isinstance(rejected, list) or not rejected \
                or rejected[-1]["role"] != "assistant":
            raise UserError(f"{where}: chosen and rejected conversations must both end with an assistant message")
        chosen, rejected = chosen[-1]["content"], rejected[-1]["content"]
    if prompt is None:
        raise UserError(f"{where}: no 'prompt' column; give prompt, chosen, rejected")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    pair = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    if "margin" in keys:  # how much better chosen is (a reward model's margin loss reads it)
        try:
            pair["margin"] = float(row[keys["margin"]])
        except (TypeError, ValueError):
            raise UserError(f"{where}: column 'margin' is {row[keys['margin']]!r}; give a number") from None
    return pair


LABELS = {"true": True, "1": True, "yes": True, "good": True, "up": True,
          "false": False, "0": False, "no": False, "bad": False, "down": False}


def row_to_feedback(row: dict, keys: dict[str, str], where: str) -> dict:
    """One answer and whether it was good: TRL's prompt/completion/label, or a conversation
    ending with the answer (messages or conversations) and a label (LLaMA-Factory's kto_tag)."""
    label_key = next((keys[k] for k in ("label", "kto_tag", "feedback") if k in keys), None)
    if label_key is None:
        raise UserError(f"{where}: preference data needs prompt/chosen/rejected (pairs), or prompt/completion/label "
                        "(answers marked good or bad, for --loss kto)")
    label = LABELS.get(str(row[label_key]).strip().lower())
    if label is None:
        raise UserError(f"{where}: column '{label_key}' is {row[label_key]!r}; give true or false (also 1/0, good/bad)")
    if "completion" in keys:
        prompt = _parse_cell(row[keys["prompt"]], where) if "prompt" in keys else None
        completion = _answer_cell(row[keys["completion"]], where)
        if isinstance(completion, list):
            completion = completion[-1]["content"]
    else:
        conversation_key = next((keys[k] for k in ("messages", "conversations") if k in keys), None)
        conversation = _parse_cell(row[conversation_key], where) if conversation_key else None
        if not isinstance(conversation, list) or not conversation or conversation[-1]["role"] != "assistant":
            raise UserError(f"{where}: give prompt and completion columns, or messages ending with the answer")
        prompt, completion = conversation[:-1], conversation[-1]["content"]
    if prompt is None:
        raise UserError(f"{where}: no 'prompt' column; give prompt, completion, label")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    return {"prompt": prompt, "completion": completion, "label": label}


def _parse_cell(cell, where: str):
    try:
        value = json.loads(cell) if isinstance(cell, str) and cell.strip().startswith("[") else cell
    except json.JSONDecodeError:
        value = cell
    if isinstance(value, list):
        return conv.row_to_conversation({"messages": value}, "chat", where)
    return str(value)


def _answer_cell(cell, where: str):
    """An answer: text, a message list, or one ShareGPT/chat message ({"from": "gpt", "value": ...})."""
    if isinstance(cell, dict):
        return str(cell.get("content", cell.get("value", "")))
    return _parse_cell(cell, where)


def is_feedback(example: dict) -> bool:
    return "completion" in example


def read_pairs(source: str, encoding: str) -> dict[str, Examples]:
    tables = {"all": llamafactory_demo(source)} if source in DEMOS else read_source(source, encoding)
    out = {}
    for split, table in tables.items():
        records = table.frame.to_dict("records")
        pairs = [row_to_pair(r, table.where(i)) for i, r in enumerate(records)]
        if len({is_feedback(p) for p in pairs}) > 1:
            raise UserError(f"{table.source}: rows mix ranked pairs and answers marked good/bad; give one layout")
        out[split] = Examples(pairs, [""] * len(pairs), table.source, [table.where(i) for i in range(len(pairs))])
    return out


# LLaMA-Factory's demo sets, in its source distribution (the wheel leaves data/ out): `make data`.
DEMOS = {"dpo-en-demo": "dpo_en_demo.json", "kto-en-demo": "kto_en_demo.json"}
LLAMAFACTORY_SDIST = "llamafactory-0.9.5.tar.gz"


def llamafactory_demo(name: str):
    """300 chosen/rejected conversations (dpo-en-demo) or 300 answers labelled true/false
    (kto-en-demo), read from the archive as it is; nothing in it runs."""
    import tarfile

    import pandas as pd

    from tunesmith.data.relations import sdist_folder
    from tunesmith.data.sources import Table

    archive = sdist_folder() / LLAMAFACTORY_SDIST
    if not archive.is_file():
        raise UserError(f"dataset '{name}' needs the llamafactory source distribution: run `make data`, or pip download "
                        f"--no-deps --no-binary :all: llamafactory==0.9.5 -d {sdist_folder()}")
    with tarfile.open(archive, "r:gz") as tar:
        member = tar.extractfile(f"llamafactory-0.9.5/data/{DEMOS[name]}")
        if member is None:
            raise UserError(f"{archive}: has no data/{DEMOS[name]}; download llamafactory==0.9.5 again")
        rows = json.loads(member.read().decode("utf-8"))
    return Table(pd.DataFrame({k: [r.get(k) for r in rows] for k in rows[0]}), name, "row")


def drop_unusable(examples: Examples, name: str) -> tuple[Examples, list[str]]:
    bad = {}
    for i, p in enumerate(examples.texts):
        if is_feedback(p):
            if not str(p["completion"]).strip():
                bad.setdefault("an empty answer", []).append(i)
        elif not str(p["chosen"]).strip() or not str(p["rejected"]).strip():
            bad.setdefault("an empty chosen or rejected answer", []).append(i)
        elif p["chosen"] == p["rejected"]:
            bad.setdefault("chosen and rejected are the same", []).append(i)
    from tunesmith.data.checks import _where

    drop = {i for rows in bad.values() for i in rows}
    warnings = [f"{name}: {len(rows)} pairs dropped: {why} ({_where(examples, rows)})" for why, rows in bad.items()]
    return examples.subset([i for i in range(len(examples)) if i not in drop]), warnings


def sequence_logps(model, input_ids, labels, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of the labelled (answer) tokens of each row, and their count
    (computed in chunks, never as full-vocabulary log-softmax over every position:
    tasks/token_logprobs.py)."""
    return answer_logprobs(model, input_ids, labels, attention_mask)


def collate_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Chosen sequences then rejected ones, in one right-padded batch of 2 x len(rows)."""
    sequences = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, (ids, labs) in enumerate(sequences):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(ids)] = torch.tensor(labs)
        mask[i, : len(ids)] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": mask}
    if all("ref_chosen" in r for r in rows):
        batch["ref_chosen"] = torch.tensor([r["ref_chosen"] for r in rows], dtype=torch.float32)
        batch["ref_rejected"] = torch.tensor([r["ref_rejected"] for r in rows], dtype=torch.float32)
    return batch


def score_answers(model, features: Features) -> PairScores:
    """The summed answer log-probabilities (and token counts) of every pair under `model`
    (kto: of every row's own answer, as `chosen`, and its mismatched one, as `rejected`)."""
    sums, counts = np.zeros((2, len(features))), np.zeros((2, len(features)))
    with evaluating(model) as device:
        for indices in inference_batches(features.lengths, SCORE_BATCH):
            batch = features.batch(indices)
            logps, tokens = sequence_logps(model, batch["input_ids"].to(device), batch["labels"].to(device),
                                           batch["attention_mask"].to(device))
            sums[:, indices] = logps.cpu().numpy().reshape(2, len(indices))
            counts[:, indices] = tokens.cpu().numpy().reshape(2, len(indices))
    t = torch.as_tensor
    return PairScores(t(sums[0]), t(sums[1]), t(counts[0]), t(counts[1]))


class PreferenceTask(TaskDefaults):
    name = "preference"
    pipeline_tag = "text-generation"
    builtin_data = tuple(DEMOS)  # LLaMA-Factory's dpo-en-demo and kto-en-demo
    answer = "generation"
    settings = (AnswerSettings, DpoSettings)
    peft_task_type = "CAUSAL_LM"
    metrics_higher_is_better = {"loss": False, "reward_accuracy": True, "reward_margin": True}
    default_metric = "loss"
    default_model = "smollm2"
    # A pair is two sequences (chosen and rejected): 1 pair per micro-batch, 16 per step.
    train_defaults = {"batch_size": 1, "grad_accum": 16, "epochs": 3.0}  # as causal-lm: no small-data rule
    generative = True  # --long-text: truncate only (a pair keeps its start, the prompt)
    sequences_per_example = 2  # chosen and rejected: what a memory estimate counts per pair
    default_max_length = 512
    has_baseline = True
    baseline_name = "the model before tuning"

    def default_lr(self, method: str, model: str) -> float | None:
        return None

    # ---- data ---------------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("--data: give a CSV/JSONL/Parquet file with prompt, chosen and rejected columns")
        if cfg.preference_noise and cfg.loss != "robust":
            raise UserError(f"--preference-noise is read by --loss robust only (this run's loss: {cfg.loss})")
        if cfg.simpo_gamma != DpoSettings.model_fields["simpo_gamma"].default and cfg.loss != "simpo":
            raise UserError(f"--simpo-gamma is read by --loss simpo only (this run's loss: {cfg.loss})")
        if (cfg.desirable_weight, cfg.undesirable_weight) != (1.0, 1.0) and cfg.loss != "kto":
            raise UserError(f"--desirable-weight and --undesirable-weight are read by --loss kto only (this run's "
                            f"loss: {cfg.loss})")
        train, val, test, notes, warnings = assemble_splits(cfg, lambda source: read_pairs(source, cfg.encoding),
                                                            drop_unusable)
        feedback = is_feedback(train.texts[0])
        if feedback and cfg.loss != "kto":
            raise UserError(f"{cfg.data}: rows are answers marked good or bad, not ranked pairs; train them with "
                            "--loss kto")
        if cfg.loss == "kto" and not feedback:  # a pair is a good answer and a bad one (TRL's unpairing)
            train, val, test = (unpair(part) for part in (train, val, test))
            notes.append("--loss kto: each pair read as its chosen answer (good) and its rejected one (bad)")
        return Splits(train, val, test, [], "answer" if cfg.loss == "kto" else "preference pair", "", notes=notes,
                      warnings=warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        tables = read_pairs(source, encoding)
        examples = tables.get("all") or tables.get("test")
        if examples is None:
            raise UserError(f"{source}: no test split found")
        examples = drop_unusable(examples, "data")[0]
        if cfg.loss == "kto" and not is_feedback(examples.texts[0]):
            return unpair(examples)
        if cfg.loss != "kto" and is_feedback(examples.texts[0]):
            raise UserError(f"{source}: answers marked good or bad; this run scores ranked pairs (its loss: {cfg.loss})")
        return examples

    def check(self, splits: Splits, processor, max_length: int) -> CheckReport:
        report = splits_report(splits)
        if processor is None:
            return report
        lengths = []
        for example in splits.train.texts + splits.val.texts + splits.test.texts:
            for conversation in _answers(example):
                lengths.append(len(conv.encode_conversation(processor.tokenizer, conversation, 10**9)[0].input_ids))
        cut = sum(n > max_length for n in lengths)
        report.facts["token_lengths"] = token_length_facts(lengths, max_length, cut,
                                                           sum(max(0, n - max_length) for n in lengths))
        if cut:
            report.warnings.append(f"{cut} answers are cut at max_length {max_length}; their preference is judged on "
                                   f"a truncated text; {longer_max_length(report.facts['token_lengths']['p99'], processor.tokenizer)}")
        report.facts["preview"] = conv.render_text(processor.tokenizer, _answers(splits.train.texts[0])[0])[0]
        if is_feedback(splits.train.texts[0]):
            _balance(report, splits.train.texts, processor.weights)
        return report

    # ---- model ----------------------------------------------------------------------------------
    def load_processor(self, source: str, cfg) -> PreferenceProcessor:
        from tunesmith import models

        return PreferenceProcessor(models.load_tokenizer(source), max_new_tokens=cfg.max_new_tokens,
                                   eval_answers=cfg.eval_answers, beta=cfg.dpo_beta,
                                   reference_source=cfg.model or source, loss=cfg.loss, noise=cfg.preference_noise,
                                   gamma=cfg.simpo_gamma, weights=(cfg.desirable_weight, cfg.undesirable_weight))

    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        return load_causal_lm(source)

    def load_model(self, folder: str):
        return load_saved_causal_lm(folder)

    # ---- features -------------------------------------------------------------------------------
    def encode(self, processor, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        if inputs and not any(isinstance(pair, dict) and ("chosen" in pair or "completion" in pair) for pair in inputs):
            # Prompts (serving, `generate`): rows to answer, as a causal-lm run makes them.
            return GENERATION.encode(processor, inputs, targets, labels, max_length)
        if processor.loss == "kto":
            return kto.encode(processor, [dict(row) for row in inputs], max_length)
        rows = []
        for pair in inputs:
            if not isinstance(pair, dict) or "chosen" not in pair:
                raise UserError("a preference run answers prompts with `tunesmith generate RUN --file PROMPTS -o OUT`; "
                                "`predict` and `eval DATA` need prompt, chosen and rejected")
            row = {}
            for answer in ("chosen", "rejected"):
                piece = conv.encode_conversation(processor.tokenizer, _conversation(pair, answer), max_length)[0]
                row[answer] = (piece.input_ids, piece.labels)
            row["length"] = max(len(row["chosen"][0]), len(row["rejected"][0]))
            rows.append(row)
        pad_id = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else \
            processor.tokenizer.eos_token_id
        return Features(rows, pad_id, collate=lambda batch: collate_pairs(batch, pad_id), processor=processor)

    def score_reference(self, model, features: dict[str, Features]) -> bool:
        """Reference log-probabilities of every pair, from the starting model, stored in the
        rows; False (nothing scored) for the reference-free losses, which never read them."""
        for split in features.values():
            if not split.processor.uses_reference:
                return False
            scores = self._logps(model, split)
            names = ("ref_answer", "ref_kl") if split.processor.loss == "kto" else ("ref_chosen", "ref_rejected")
            for row, first, second in zip(split.rows, scores.chosen, scores.rejected):
                row[names[0]], row[names[1]] = float(first), float(second)
        return True

    def _logps(self, model, features: Features) -> PairScores:
        return score_answers(model, features)

    def training_loss(self, model, batch: dict, processor) -> tuple[torch.Tensor, dict]:
        """The batch's preference loss (ORPO's with the SFT term), and the implicit rewards for
        the history curves."""
        n = len(batch["input_ids"]) // 2
        if processor.loss == "kto":
            return _kto_loss(model, batch, processor, n)
        logps, tokens = sequence_logps(model, batch["input_ids"], batch["labels"], batch["attention_mask"])
        scores = PairScores(logps[:n], logps[n:], tokens[:n], tokens[n:], batch.get("ref_chosen"),
                            batch.get("ref_rejected"))
        losses, chosen_reward, rejected_reward = processor.losses(scores)
        loss = losses.mean()
        extras = {}
        if processor.loss == "orpo":  # the chosen answer's SFT loss, per token, beside the odds-ratio term
            nll = -logps[:n].sum() / tokens[:n].sum().clamp(min=1)
            loss, extras["nll"] = loss + nll, float(nll.detach())
        return loss, {**extras, "chosen_reward": float(chosen_reward.mean()),
                      "rejected_reward": float(rejected_reward.mean()),
                      "reward_accuracy": float((chosen_reward > rejected_reward).float().mean()),
                      "chosen_logp": float(logps[:n].detach().mean()),
                      "rejected_logp": float(logps[n:].detach().mean())}

    def predict(self, model, features: Features, batch_size: int = SCORE_BATCH) -> dict:
        if features.meta and features.meta[0].get("prompt"):  # prompts: generated answers
            return GENERATION.predict(model, features)
        processor = features.processor
        scores = self._logps(model, features)
        if processor.loss == "kto":
            return _kto_outputs(scores, features, processor)
        if processor.uses_reference and features.rows and "ref_chosen" in features.rows[0]:
            scores.ref_chosen = torch.tensor([r["ref_chosen"] for r in features.rows], dtype=torch.float64)
            scores.ref_rejected = torch.tensor([r["ref_rejected"] for r in features.rows], dtype=torch.float64)
        elif processor.uses_reference:  # a saved run: score the pairs with the starting model again
            reference = self._logps(processor.reference_model(), features)
            scores.ref_chosen, scores.ref_rejected = reference.chosen, reference.rejected
        return {"scores": scores, "processor": processor}

    def metrics(self, targets, outputs, labels) -> dict:
        scores, processor = outputs["scores"], outputs["processor"]
        if processor.loss == "kto":
            return kto.metrics(outputs, processor.beta, *processor.weights)
        losses, chosen_reward, rejected_reward = processor.losses(scores)
        loss = float(losses.mean())
        if processor.loss == "orpo":
            loss += float(-scores.chosen.sum() / scores.chosen_tokens.sum().clamp(min=1))
        return {
            "loss": loss,
            "reward_accuracy": float((chosen_reward > rejected_reward).float().mean()),
            "reward_margin": float((chosen_reward - rejected_reward).mean()),
            # Model-only view, comparable between the base and the tuned model: how often the
            # chosen answer is the more likely one.
            "logp_accuracy": float((scores.chosen > scores.rejected).float().mean()),
            "chosen_logp": float(scores.chosen.mean()),
            "rejected_logp": float(scores.rejected.mean()),
            "count": len(scores.chosen),
        }

    def summary(self, metrics: dict) -> str:
        if "kl" in metrics:  # kto
            return (f"reward accuracy {metrics['reward_accuracy']:.3f} (good answers above the reference, bad ones "
                    f"below), margin {metrics['reward_margin']:.3f}, KL {metrics['kl']:.4f}, loss {metrics['loss']:.4f}")
        return (f"reward accuracy {metrics['reward_accuracy']:.3f}, margin {metrics['reward_margin']:.3f}, "
                f"loss {metrics['loss']:.4f}; chosen more likely than rejected in {metrics['logp_accuracy']:.1%}")

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        """The starting model's scores. With a reference loss it is its own reference (margin 0
        and sigmoid loss log 2 by definition: compare logp_accuracy); the reference-free losses
        score it as they score the tuned model."""
        processor = test.processor
        scores = self._logps(model, test)
        if processor.loss == "kto":  # the starting model is the reference: every reward 0
            outputs = _kto_outputs(scores, test, processor, reference=scores)
            return {**kto.metrics(outputs, processor.beta, *processor.weights), "description": "the starting model "
                    "(the reference: its rewards are 0 by definition)"}
        if processor.uses_reference:  # the starting model is the reference
            scores.ref_chosen, scores.ref_rejected = scores.chosen, scores.rejected
        return {**self.metrics(None, {"scores": scores, "processor": processor}, labels),
                "description": "the starting model" + (" (the reference: its margin is 0 by definition; compare "
                                                       "logp_accuracy)" if processor.uses_reference else "")}

    # ---- generation, predict, serve ---------------------------------------------------------------
    def answer_metrics(self, model, processor, inputs: list) -> dict:
        """Answers to the prompts, scored against the chosen (kto: the good) answers."""
        wanted = [p for p in inputs if not is_feedback(p) or p["label"]]
        return answer_metrics(model, processor, [_answers(p)[0] for p in wanted])

    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        """Prompts for `tunesmith generate --file`."""
        return read_prompts(path, encoding, text_col)

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        raise UserError("a preference run answers prompts: use `tunesmith generate RUN --file PROMPTS -o OUT`")

    # Served as causal-lm runs are: a prompt in, generated text out.
    serve_input = CausalLMTask.serve_input
    output_rows = CausalLMTask.output_rows
    serve_output = CausalLMTask.serve_output


GENERATION = CausalLMTask()  # answers prompts for a preference run as for a causal-lm one


def _conversation(pair, answer: str) -> list[dict]:
    return [dict(m) for m in pair["prompt"]] + [{"role": "assistant", "content": pair[answer]}]


def _answers(example) -> list[list[dict]]:
    """The conversations an example holds: chosen and rejected, or its one answer."""
    keys = ("completion",) if is_feedback(example) else ("chosen", "rejected")
    return [_conversation(example, key) for key in keys]


def unpair(examples: Examples) -> Examples:
    """Each pair as two answers marked good (chosen) and bad (rejected)."""
    rows, where = [], []
    for pair, place in zip(examples.texts, examples.where):
        rows += [{"prompt": pair["prompt"], "completion": pair["chosen"], "label": True},
                 {"prompt": pair["prompt"], "completion": pair["rejected"], "label": False}]
        where += [place, place]
    return Examples(rows, [""] * len(rows), examples.source, where)


def _balance(report: CheckReport, rows: list[dict], weights: tuple[float, float]) -> None:
    """KTO's paper keeps w_d n_d / (w_u n_u) in [1, 4/3]; say which weights do when it is not."""
    good = sum(bool(r["label"]) for r in rows)
    bad = len(rows) - good
    report.facts["answers"] = {"desirable": good, "undesirable": bad}
    if not good or not bad:
        report.warnings.append(f"every training answer is {'good' if good else 'bad'}; KTO needs both kinds")
        return
    ratio = weights[0] * good / (weights[1] * bad)
    if not 1.0 <= ratio <= 4 / 3:
        suggested = bad / good  # w_d with w_u = 1 puts the ratio at 1
        report.warnings.append(f"{good} good and {bad} bad answers: weighted {ratio:.2f} to 1; KTO's authors keep it "
                               f"between 1 and 4/3: --desirable-weight {max(suggested, 1e-3):.2f} "
                               "--undesirable-weight 1")


def _kto_loss(model, batch: dict, processor, n: int) -> tuple[torch.Tensor, dict]:
    """KTO on a batch: the rows' own answers with gradients, the mismatched ones (for z) without."""
    answer, _ = sequence_logps(model, batch["input_ids"][:n], batch["labels"][:n], batch["attention_mask"][:n])
    with torch.no_grad():
        other, _ = sequence_logps(model, batch["input_ids"][n:], batch["labels"][n:], batch["attention_mask"][n:])
    losses, reward, z = kto.losses(answer, batch["ref_answer"], other, batch["ref_kl"], batch["desirable"],
                                   processor.beta, *processor.weights)
    good = batch["desirable"]
    return losses.mean(), {"kl": float(z), "reward_accuracy": float(((reward > 0) == good).float().mean()),
                           **({"chosen_reward": float(reward[good].mean())} if good.any() else {}),
                           **({"rejected_reward": float(reward[~good].mean())} if (~good).any() else {})}


def _kto_outputs(scores: PairScores, features: Features, processor, reference: PairScores | None = None) -> dict:
    """What kto.metrics reads: the rows' answers and mismatched answers under the model and the reference."""
    if reference is None and features.rows and "ref_answer" in features.rows[0]:
        ref_answer = torch.tensor([r["ref_answer"] for r in features.rows], dtype=torch.float64)
        ref_kl = torch.tensor([r["ref_kl"] for r in features.rows], dtype=torch.float64)
    else:  # the baseline (its own reference), or a saved run: the starting model scored again
        reference = reference or score_answers(processor.reference_model(), features)
        ref_answer, ref_kl = reference.chosen, reference.rejected
    return {"answer": scores.chosen, "kl": scores.rejected, "ref_answer": ref_answer, "ref_kl": ref_kl,
            "desirable": [r["desirable"] for r in features.rows], "scores": scores, "processor": processor}


register_task(PreferenceTask())
