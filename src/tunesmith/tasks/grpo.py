"""rl: reinforcement learning of a causal LM from rewards, with GRPO (Shao et al. 2024).

An example is a prompt and, for the verifiable rewards, a reference answer. Each training step
samples a group of G completions per prompt from the model being tuned, scores them with the
run's reward functions (tasks/rewards.py), and turns each reward into an advantage relative to
its own group: A = (r - mean(group)) / (std(group) + 1e-4), so no value model is needed. The
loss, per completion token, is the clipped objective with a KL penalty to the starting model,

    -min(ρ A, clip(ρ, 1 - ε, 1 + ε) A) + β (π_ref / π - log(π_ref / π) - 1),    ρ = π / π_old

averaged over each completion's tokens, then over the completions: TRL's GRPOTrainer with
loss_type "grpo" (tests/test_grpo.py checks the advantages with TRL's own code). Each group is
used for one gradient step, as TRL's default num_iterations=1: π_old is then π itself, ρ is 1
and the clip never binds, which leaves the group-normalised policy gradient plus the KL term.

The reference is the starting model: for LoRA and the other adapter methods it is the same
model with the adapter switched off (no second copy in memory); for methods that change the
weights themselves a frozen copy is loaded once. Generation is batched `generate` with sampling
(temperature `--rl-temperature`, 0.7); validation and test answers are greedy, scored by the same
rewards, with `accuracy` (the final number equals the reference) where references exist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from pydantic import BaseModel, Field

from tunesmith.data import arithmetic
from tunesmith.data import conversations as conv
from tunesmith.data.batching import IGNORE, Features
from tunesmith.data.checks import CheckReport, splits_report
from tunesmith.data.labeled import Examples
from tunesmith.data.sources import read_source
from tunesmith.data.splits import Splits
from tunesmith.errors import UserError
from tunesmith.generation import generate
from tunesmith.tasks import register_task, rewards
from tunesmith.tasks.causal_lm import (SAMPLES, AnswerSettings, CausalLMTask, ChatProcessor, assemble_splits,
                                       load_causal_lm, token_length_facts)
from tunesmith.tasks.token_logprobs import token_logprobs

PROMPT_COLUMNS = ("prompt", "question", "problem", "instruction", "query", "input")
ANSWER_COLUMNS = ("answer", "solution", "reference", "ground_truth", "target", "output")


class RlSettings(BaseModel):
    """rl: the rewards, the groups and how far the policy may move."""

    reward: str = Field("number", description="rl: reward functions, comma-separated, each with an optional =weight: "
                        "number (the final number equals the answer column), format ('Answer: N' last), json, regex "
                        "(--reward-pattern), length (a penalty), a reward-model run folder, or file.py:function.")
    reward_pattern: Optional[str] = Field(None, description="rl, reward regex: the pattern a good completion matches.")
    group_size: int = Field(4, ge=2, le=64, description="rl: completions sampled per prompt; their rewards are "
                            "compared within the group.")
    kl_beta: float = Field(0.04, ge=0, description="rl: weight of the KL penalty to the starting model (0: none).")
    clip_epsilon: float = Field(0.2, gt=0, lt=1, description="rl: how far the probability ratio may move before the "
                                "objective is clipped.")
    # Below TRL's 1.0: a 135M model sampled at 1.0 wrote mostly garbled steps (8% of its samples
    # right on arithmetic, against 19% of its greedy answers; docs/benchmarks.md).
    rl_temperature: float = Field(0.7, gt=0, description="rl: sampling temperature of the training completions.")


@dataclass
class RlProcessor(ChatProcessor):
    reward: str = "number"
    reward_pattern: str | None = None
    group_size: int = 4
    kl_beta: float = 0.04
    clip_epsilon: float = 0.2
    temperature: float = 1.0
    reference_source: str | None = None  # the starting model, for methods without an adapter to switch off
    _rewards: list | None = None
    _reference: object = None

    def rewards(self) -> list[rewards.Reward]:
        """The reward functions, built on first use (a reward model loads, a user's file is imported)."""
        if self._rewards is None:
            self._rewards = rewards.build(self.reward, self.reward_pattern, self.tokenizer, self.max_new_tokens)
        return self._rewards

    def reference_logps(self, model, batch: dict) -> torch.Tensor | None:
        """The starting model's token log-probabilities of the batch's completions."""
        if not self.kl_beta:
            return None
        with torch.no_grad():
            if hasattr(model, "disable_adapter"):  # PEFT: the base weights are the starting model
                with model.disable_adapter():
                    return token_logprobs(model, **batch)[0]
            if self._reference is None:
                self._reference = load_causal_lm(self.reference_source).eval()
            return token_logprobs(self._reference.to(batch["input_ids"].device), **batch)[0]


class Carried(tuple):
    """Batch entries that are not tensors (prompts, reference answers): the loop moves a batch
    to the device with `.to`, which leaves these as they are."""

    def to(self, device) -> "Carried":
        return self


# ---- the maths: advantages and the loss -------------------------------------------------------

def group_advantages(rewards_: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each reward relative to its group (consecutive runs of `group_size`): mean 0, divided by
    the group's standard deviation (unbiased, as TRL's nanstd) plus 1e-4."""
    grouped = rewards_.view(-1, group_size)
    mean, std = grouped.mean(1, keepdim=True), grouped.std(1, keepdim=True)
    return ((grouped - mean) / (std + 1e-4)).view(-1)


def policy_loss(logps, old_logps, ref_logps, advantages, mask, epsilon: float, beta: float):
    """The GRPO loss over completions ((rows, tokens) log-probabilities, `mask` of completion
    tokens), and the mean per-token KL to the reference (0 without one)."""
    ratio = torch.exp(logps - old_logps)
    advantages = advantages.unsqueeze(1)
    per_token = -torch.min(ratio * advantages, ratio.clamp(1 - epsilon, 1 + epsilon) * advantages)
    kl = torch.zeros_like(per_token)
    if ref_logps is not None and beta:
        kl = torch.exp(ref_logps - logps) - (ref_logps - logps) - 1
        per_token = per_token + beta * kl
    mask = mask.float()
    tokens = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / tokens).mean()
    return loss, float(((kl * mask).sum(1) / tokens).mean().detach())


# ---- data -----------------------------------------------------------------------------------

def row_to_problem(row: dict, where: str) -> dict:
    """A row as {"prompt": messages, "answer": reference or ""}: the prompt is a text or a
    message list (TRL's conversational prompts), the answer any of ANSWER_COLUMNS."""
    lowered = {str(k).lower(): k for k in row}
    prompt_key = next((lowered[c] for c in PROMPT_COLUMNS if c in lowered), None)
    if prompt_key is None:
        raise UserError(f"{where}: no prompt column; name it one of {', '.join(PROMPT_COLUMNS)}")
    prompt = row[prompt_key]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UserError(f"{where}: the prompt is empty")
        messages = [{"role": "user", "content": prompt}]
    elif isinstance(prompt, (list, tuple)) and prompt and all(isinstance(m, dict) and "content" in m for m in prompt):
        messages = [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in prompt]
    else:
        raise UserError(f"{where}: the prompt must be a text or a list of {{role, content}} messages")
    answer_key = next((lowered[c] for c in ANSWER_COLUMNS if c in lowered), None)
    answer = row.get(answer_key) if answer_key is not None else None
    return {"prompt": messages, "answer": "" if answer is None or answer != answer else str(answer)}  # NaN: none


def read_problems(source: str, encoding: str) -> dict[str, Examples]:
    """Every split of a source (or the built-in `arithmetic` set) as prompts with answers."""
    tables = arithmetic.splits() if source == arithmetic.NAME else read_source(source, encoding)
    out = {}
    for split, table in tables.items():
        rows = table.frame.to_dict("records")
        problems = [row_to_problem(row, table.where(i)) for i, row in enumerate(rows)]
        out[split] = Examples(problems, [""] * len(problems), table.source, [table.where(i) for i in range(len(rows))])
    return out


def keep_all(examples: Examples, name: str) -> tuple[Examples, list[str]]:
    return examples, []


def as_problem(value) -> dict:
    """An input as a problem: prompts from serving and `generate` are message lists without answers."""
    if isinstance(value, dict) and "prompt" in value:
        return {"prompt": [dict(m) for m in value["prompt"]], "answer": value.get("answer", "")}
    if isinstance(value, str):
        return {"prompt": [{"role": "user", "content": value}], "answer": ""}
    return {"prompt": [dict(m) for m in value if m["role"] != "assistant"], "answer": ""}


# ---- the task -------------------------------------------------------------------------------

class RlTask(CausalLMTask):
    name = "rl"
    builtin_data = (arithmetic.NAME,)
    settings = (AnswerSettings, RlSettings)
    metrics_higher_is_better = {"reward": True, "accuracy": True}
    default_metric = "reward"
    # Micro-batches of 2 prompts (8 sampled completions), 2 per step: 4 prompts and 16 completions
    # a step, so that a CPU's budget buys many small steps; one pass over the prompts. Activations
    # recomputed in backward: peak memory 2.5 GB instead of 5.5 GB for ~20% longer steps
    # (generation, the larger share of a step, is unaffected; docs/benchmarks.md).
    train_defaults = {"batch_size": 2, "grad_accum": 2, "epochs": 1.0, "max_new_tokens": 64, "eval_answers": 100,
                      "gradient_checkpointing": True}
    sequences_per_example = 4  # the default group: what a memory estimate counts per prompt
    default_max_length = 512
    baseline_name = "the model before tuning"

    def default_lr(self, method: str, model: str) -> float | None:
        # Full tuning takes TRL's GRPO default (1e-6). LoRA keeps its own rate: at a fifth of it
        # the policy hardly moved in 20 steps (KL to the start under 0.004; docs/benchmarks.md).
        return {"full": 1e-6}.get(method)

    # ---- data -----------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("--data: give a CSV/JSONL/Parquet file with a prompt column (and an answer column for "
                            "--reward number), or the built-in arithmetic")
        train, val, test, notes, warnings = assemble_splits(cfg, lambda source: read_problems(source, cfg.encoding),
                                                            keep_all)
        if "number" in [name for name, _ in rewards.parse(cfg.reward)]:
            for name, examples in (("train", train), ("val", val), ("test", test)):
                missing = [i for i, p in enumerate(examples.texts) if rewards.final_number(p["answer"]) is None]
                if missing:
                    where = examples.where[missing[0]] if examples.where else f"row {missing[0] + 1}"
                    raise UserError(f"--reward number: {len(missing)} {name} rows have no number in their answer "
                                    f"column (first: {where}); give each prompt its answer, or choose other rewards "
                                    "with --reward")
        if cfg.data == arithmetic.NAME:
            notes.append(f"arithmetic: {len(train) + len(val) + len(test)} generated word problems (seeded; "
                         "data/arithmetic.py)")
        return Splits(train, val, test, [], "prompt", "", notes=notes, warnings=warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        tables = read_problems(source, encoding)
        examples = tables.get("all") or tables.get("test")
        if examples is None:
            raise UserError(f"{source}: no test split found")
        return examples

    def check(self, splits: Splits, processor, max_length: int) -> CheckReport:
        report = splits_report(splits)
        if processor is None:
            return report
        processor.rewards()  # the user's file imports, the reward model loads: before any training
        lengths = [len(processor.prompt_ids(processor.prompt_text(p["prompt"])))
                   for ex in (splits.train, splits.val, splits.test) for p in ex.texts]
        room = max_length - processor.max_new_tokens
        cut = sum(n > room for n in lengths)
        report.facts["token_lengths"] = token_length_facts(lengths, max_length, cut, sum(max(0, n - room) for n in lengths))
        if cut:
            report.warnings.append(f"{cut} prompts are longer than max_length {max_length} less --max-new-tokens "
                                   f"{processor.max_new_tokens}: their start is cut; raise --max-length")
        report.facts["preview"] = processor.prompt_text(splits.train.texts[0]["prompt"])
        return report

    # ---- model ------------------------------------------------------------------------------
    def load_processor(self, source: str, cfg) -> RlProcessor:
        from tunesmith import models

        return RlProcessor(models.load_tokenizer(source), eval_answers=cfg.eval_answers,
                           max_new_tokens=cfg.max_new_tokens, reward=cfg.reward, reward_pattern=cfg.reward_pattern,
                           group_size=cfg.group_size, kl_beta=cfg.kl_beta, clip_epsilon=cfg.clip_epsilon,
                           temperature=cfg.rl_temperature, reference_source=cfg.model or source)

    # ---- features: prompts, left-padded --------------------------------------------------------
    def encode(self, processor, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        room = max(1, max_length - processor.max_new_tokens)
        rows, meta = [], []
        for index, value in enumerate(inputs):
            problem = as_problem(value)
            ids = processor.prompt_ids(processor.prompt_text(problem["prompt"]))[-room:]  # keep the question's end
            rows.append({"input_ids": ids, "prompt": problem["prompt"], "answer": problem["answer"]})
            meta.append({"example": index, "prompt": True})
        pad_id = processor.tokenizer.pad_token_id if processor.tokenizer.pad_token_id is not None else \
            processor.tokenizer.eos_token_id
        return Features(rows, pad_id, meta=meta, processor=processor, collate=lambda batch: collate(batch, pad_id))

    # ---- training: sample, score, step ---------------------------------------------------------
    def training_loss(self, model, batch: dict, processor) -> tuple[torch.Tensor, dict]:
        group = processor.group_size
        completions, sequences = sample_groups(model, batch, processor)
        prompts = [p for p in batch["prompts"] for _ in range(group)]
        answers = [a for a in batch["answers"] for _ in range(group)]
        scored = rewards.score_all(processor.rewards(), prompts, completions, answers)
        reward = torch.tensor(scored["reward"], dtype=torch.float32)
        advantages = group_advantages(reward, group).to(sequences["input_ids"].device)
        logps, mask = token_logprobs(model, **sequences)
        reference = processor.reference_logps(model, sequences)
        loss, kl = policy_loss(logps, logps.detach(), reference, advantages, mask, processor.clip_epsilon,
                               processor.kl_beta)
        extras = {"reward": float(reward.mean()), "reward_std": float(reward.view(-1, group).std(1).mean()),
                  "kl": kl, "completion_tokens": float(mask.sum(1).float().mean())}
        extras.update(rewards.means(processor.rewards(), scored))
        extras["sample"] = {"completion": completions[0], "reward": scored["reward"][0],
                            "answer": answers[0]}
        return loss, extras

    # ---- evaluation: greedy answers, scored by the rewards ---------------------------------------
    def predict(self, model, features: Features, batch_size: int = 8) -> dict:
        processor = features.processor
        texts = [processor.prompt_text(row["prompt"]) for row in features.rows]
        answers = generate(model, processor.tokenizer, texts, processor.generation()) if texts else []
        return {"answers": answers, "prompts": [row["prompt"] for row in features.rows],
                "references": [row["answer"] for row in features.rows], "processor": processor}

    def metrics(self, targets, outputs, labels) -> dict:
        answers, references = outputs["answers"], outputs["references"]
        processor = outputs["processor"]
        scored = rewards.score_all(processor.rewards(), outputs["prompts"], answers, references)
        metrics = {"reward": sum(scored["reward"]) / max(1, len(answers)), "count": len(answers)}
        metrics.update(rewards.means(processor.rewards(), scored))
        if references and all(rewards.final_number(r) is not None for r in references):
            metrics["accuracy"] = sum(rewards.number(None, answers, references)) / len(answers)
        metrics["answer_tokens"] = sum(len(processor.prompt_ids(a)) for a in answers) / max(1, len(answers))
        metrics["samples"] = [{"prompt": p[-1]["content"], "reference": r, "answer": a}
                              for p, r, a in list(zip(outputs["prompts"], references, answers))[:SAMPLES]]
        return metrics

    def answer_metrics(self, model, processor, inputs: list) -> dict:
        return {}  # `metrics` scores the generated answers already

    def summary(self, metrics: dict) -> str:
        line = f"reward {metrics['reward']:.3f}"
        if "accuracy" in metrics:
            line += f", accuracy {metrics['accuracy']:.3f} (final number right)"
        return line + f", {metrics['answer_tokens']:.0f} tokens an answer ({metrics['count']} prompts)"

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        return {**self.metrics(None, self.predict(model, test), labels),
                "description": "the pretrained model as it is, before tuning"}

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        from tunesmith.forward import write_rows

        write_rows(path, [{**row, "generated": answer} for row, answer in zip(rows, outputs["answers"])])


def collate(rows: list[dict], pad_id: int) -> dict:
    """Prompts left-padded (generation continues them all at the same position), with their
    messages and reference answers carried along for the rewards."""
    width = max(len(r["input_ids"]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r["input_ids"]):] = torch.tensor(r["input_ids"])
        mask[i, width - len(r["input_ids"]):] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "prompts": Carried(r["prompt"] for r in rows),
            "answers": Carried(r["answer"] for r in rows)}


def sample_groups(model, batch: dict, processor: RlProcessor) -> tuple[list[str], dict]:
    """`group_size` sampled completions per prompt (in eval mode, without gradients), and the
    prompt + completion sequences to score, labelled on the completion up to its first end token."""
    tokenizer, group = processor.tokenizer, processor.group_size
    prompt_ids = batch["input_ids"].repeat_interleave(group, 0)
    prompt_mask = batch["attention_mask"].repeat_interleave(group, 0)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True,
                                 temperature=processor.temperature, top_p=1.0, top_k=0,
                                 max_new_tokens=processor.max_new_tokens, pad_token_id=pad_id,
                                 eos_token_id=tokenizer.eos_token_id, use_cache=True)
    finally:
        model.train(was_training)
    completion = out[:, prompt_ids.shape[1]:]
    ended = completion == tokenizer.eos_token_id
    # Completion tokens up to and including the first end token; what follows is padding.
    after_end = (ended.cumsum(1) - ended.long()) > 0
    completion_mask = (~after_end).long()
    texts = [tokenizer.decode(row[m.bool()], skip_special_tokens=True) for row, m in zip(completion, completion_mask)]
    input_ids = torch.cat([prompt_ids, completion], 1)
    attention_mask = torch.cat([prompt_mask, completion_mask], 1)
    labels = torch.full_like(input_ids, IGNORE)
    labels[:, prompt_ids.shape[1]:] = torch.where(completion_mask.bool(), completion, IGNORE)
    position_ids = (attention_mask.cumsum(1) - 1).clamp(min=0)  # left padding: positions as generate counted them
    return texts, {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask,
                   "position_ids": position_ids}


register_task(RlTask())
