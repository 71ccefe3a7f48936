"""summarization and translation: a source text in, a target text out.

One text-to-text family underneath both; they differ in their default instruction and their
metrics. Two model families sit behind them, told apart by the model's config:

- decoder-only (the causal-lm run underneath, the offline default SmolLM2): each pair becomes
  a user turn (the source inside the run's prompt template, written in config.yaml and shown
  by `check`) and an assistant turn (the target), and the loss covers the target only;
- encoder-decoder (T5, BART, Marian, NLLB, ...: tasks/seq2seq.py): the encoder reads the
  source, the decoder learns the target teacher-forced.

The processor each family loads (TextToTextProcessor, Seq2SeqProcessor) answers the same
questions (prompt_text, prompt_ids, generate), so evaluation, `predict`, `generate` and the
server need not know which family a run is. Validation selects on the held-out loss; the test report
generates an answer for up to `eval_answers` test sources, base model and tuned model alike,
and scores them: BLEU and chrF for translation, ROUGE-1/2/L for summarization
(evaluate/text_metrics.py), with the length ratio and sample outputs.

Splits are cut by source: every target of one source (Tatoeba gives a sentence several
translations) lands in one split, and all of them are its references.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.data import conversations as conv
from tunesmith.data.checks import CheckReport, check_shared_keys
from tunesmith.data.labeled import Examples, pick_column
from tunesmith.data.sources import read_source
from tunesmith.data.splits import Splits
from tunesmith.data.text_pairs import SOURCE_COLUMNS, language_name, read_pairs, references, split_by_source
from tunesmith.errors import UserError
from tunesmith.evaluate.text_metrics import summary_scores, translation_scores
from tunesmith.generation import GenerationSettings
from tunesmith.tasks import register_task, seq2seq
from tunesmith.tasks.causal_lm import (SAMPLES, AnswerSettings, CausalLMTask, ChatProcessor, ChatSettings,
                                       as_conversation, load_causal_lm, load_saved_causal_lm, sample,
                                       token_length_facts)
from tunesmith.tasks.seq2seq import Seq2SeqProcessor
from tunesmith.tasks.token_logprobs import mean_answer_loss

PLACEHOLDERS = ("source", "source_lang", "target_lang")


class TextToTextSettings(BaseModel):
    """summarization and translation: the languages, and the instruction around each source."""

    source_lang: Optional[str] = Field(None, description="translation: the source language's code (zh, en, ...); a "
                                       "column of that name is the source.")
    target_lang: Optional[str] = Field(None, description="translation: the target language's code; a column of that "
                                       "name is the target.")
    prompt_template: Optional[str] = Field(None, description="summarization, translation: the instruction the model "
                                           "reads, {source} where the source goes ({source_lang}, {target_lang}: the "
                                           "languages' names). Default: the task's.")
    num_beams: int = Field(1, ge=1, le=16, description="summarization, translation: beams of beam search in evaluation "
                           "and predict (1: greedy).")
    length_penalty: float = Field(1.0, description="summarization, translation: with beams, > 1 favours longer "
                                  "outputs, < 1 shorter.")
    no_repeat_ngram_size: int = Field(0, ge=0, description="summarization, translation: no n-gram of this size "
                                      "twice in one output (0: off; 3 is usual for summaries).")


@dataclass
class TextToTextProcessor(ChatProcessor):
    """The chat processor, and the template that turns a source into the user's turn."""

    template: str = "{source}"
    source_lang: str = ""
    target_lang: str = ""
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    label_smoothing: float = 0.0

    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                  length_penalty=self.length_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size)

    def prompt_messages(self, conversation):
        """The conversation with its first user turn put in the template: what the model reads."""
        if isinstance(conversation, str):
            return conversation
        first = next((i for i, m in enumerate(conversation) if m["role"] == "user"), None)
        if first is None:
            return conversation
        text = self.template.format(source=conversation[first]["content"], source_lang=language_name(self.source_lang),
                                    target_lang=language_name(self.target_lang))
        return [*conversation[:first], {"role": "user", "content": text}, *conversation[first + 1:]]


class TextToTextTask(CausalLMTask):
    settings = (TextToTextSettings, ChatSettings, AnswerSettings)
    # 100 generated test answers: corpus BLEU and chrF are unsteady on 20 sentences. Batches of
    # 2 x 4: a few hundred pairs then give dozens of optimizer steps, where 2 x 16 gave a dozen.
    train_defaults = {**CausalLMTask.train_defaults, "grad_accum": 4, "eval_answers": 100}
    default_template = "{source}"
    baseline_name = "the model before tuning"
    smooths_labels = True  # its training loss reads --label-smoothing (both families)

    def template(self, cfg, encoder_decoder: bool = False) -> str:
        """The run's template: given, else the task's (an encoder-decoder's: the source as it is)."""
        template = cfg.prompt_template or ("{source}" if encoder_decoder else self.default_template)
        try:
            template.format(**{name: "" for name in PLACEHOLDERS})
        except (KeyError, IndexError, ValueError) as exc:
            raise UserError(f"--prompt-template: {exc!r} is no placeholder; use {{source}} (and {{source_lang}}, "
                            "{target_lang})") from None
        if "{source}" not in template:
            raise UserError("--prompt-template: has no {source}; put {source} where the text goes")
        return template

    def planned(self, cfg, splits, source: str) -> dict:
        """The template goes into config.yaml resolved, so the run says what its model read."""
        if cfg.prompt_template is not None:
            return {}
        if seq2seq.is_encoder_decoder(source):
            return {"prompt_template": (self.template(cfg, True), "an encoder-decoder reads the source as it is")}
        return {"prompt_template": (self.template(cfg), f"the {self.name} default")}

    # ---- data -------------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError(f"--data: give a CSV/TSV/JSONL/Parquet file of source and target texts for {self.name}")
        if cfg.prompt_template:
            self.template(cfg)  # a bad template fails before any data is read
        given, notes = _given_splits(cfg), []
        if given["val"] is None or given["test"] is None:
            val, test, train = split_by_source(given["train"], [cfg.val_fraction, cfg.test_fraction], cfg.seed)
            given = {"train": train, "val": given["val"] or val, "test": given["test"] or test}
            notes.append(f"split {cfg.data} by source: train {len(train)}/val {len(given['val'])}/test "
                         f"{len(given['test'])} pairs (seed {cfg.seed})")
        limits = {"train": cfg.max_train_samples, "val": cfg.max_eval_samples, "test": cfg.max_eval_samples}
        parts = {key: _as_conversations(sample(examples, limits[key], cfg.seed)) for key, examples in given.items()}
        return Splits(parts["train"], parts["val"], parts["test"], [], "source", "target", notes=notes)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        """`eval RUN DATA`: pairs in the run's columns (its languages, or the usual names)."""
        tables = read_pairs(source, encoding, cfg.source_lang, cfg.target_lang)
        return _as_conversations(tables.get("all") or tables.get("test"))

    def check(self, splits: Splits, processor, max_length: int) -> CheckReport:
        report = CheckReport()
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        report.facts["rows"] = {name: len(ex) for name, ex in parts.items()}
        report.facts["notes"] = list(splits.notes)
        pairs = {name: [_pair(c) for c in ex.texts] for name, ex in parts.items()}
        check_shared_keys(report, parts, lambda conversation: conversation[0]["content"], "sources also appear in train")
        if processor is None:
            return report
        tokenizer = processor.tokenizer
        sources = [s for rows in pairs.values() for s, _ in rows]
        targets = [t for rows in pairs.values() for _, t in rows]
        source_ids = tokenizer(sources, add_special_tokens=False)["input_ids"]
        target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
        for side, ids in (("source", source_ids), ("target", target_ids)):
            lengths = [len(i) for i in ids]
            report.facts[f"{side}_tokens"] = token_length_facts(lengths, max_length, sum(n > max_length for n in lengths), 0)
        self.length_warnings(report, source_ids, target_ids, max_length, processor.encoder_decoder)
        first = as_conversation(splits.train.texts[0])
        if processor.encoder_decoder:  # what the encoder reads, and what the decoder learns
            report.facts["preview"] = f"{processor.prompt_text(first)}\n=> {first[-1]['content']}"
        else:
            report.facts["preview"] = conv.render_text(tokenizer, processor.prompt_messages(first))[0]
        return report

    def length_warnings(self, report: CheckReport, source_ids, target_ids, max_length: int,
                        encoder_decoder: bool) -> None:
        if encoder_decoder:  # each side has max_length tokens of its own
            for side, ids in (("sources", source_ids), ("targets", target_ids)):
                long = sum(len(i) > max_length for i in ids)
                if long:
                    report.warnings.append(f"{long} {side} are longer than max_length {max_length} tokens; their end "
                                           "is cut (raise --max-length)")
            return
        long = sum(len(s) + len(t) > max_length for s, t in zip(source_ids, target_ids))
        if long:
            report.warnings.append(f"{long} pairs are longer than max_length {max_length} tokens with their template; "
                                   "the source's end is cut (raise --max-length)")

    # ---- model --------------------------------------------------------------------------------
    def load_processor(self, source: str, cfg) -> TextToTextProcessor | Seq2SeqProcessor:
        """The processor of the model's family: decoder-only or encoder-decoder."""
        from tunesmith import models

        tokenizer, languages = models.load_tokenizer(source), (cfg.source_lang or "", cfg.target_lang or "")
        generation = (cfg.num_beams, cfg.length_penalty, cfg.no_repeat_ngram_size, cfg.label_smoothing)
        if seq2seq.is_encoder_decoder(source):
            return Seq2SeqProcessor(tokenizer, cfg.eval_answers, cfg.max_new_tokens, self.template(cfg, True),
                                    *languages, *generation)
        return TextToTextProcessor(tokenizer, cfg.train_on_prompt, cfg.packing, cfg.eval_answers, cfg.max_new_tokens,
                                   self.template(cfg), *languages, *generation)

    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        return seq2seq.load_seq2seq(source) if seq2seq.is_encoder_decoder(source) else load_causal_lm(source)

    def load_model(self, folder: str):
        return seq2seq.load_saved_seq2seq(folder) if seq2seq.is_encoder_decoder(folder) else load_saved_causal_lm(folder)

    def encode(self, processor, inputs, targets, labels, max_length, use_cache=True, augment=False, long_text=None):
        """The causal-lm rows of each conversation as the template frames it (an
        encoder-decoder's: source and target rows); the features keep the conversations as
        given, which the answer metrics read."""
        if processor.encoder_decoder:
            return seq2seq.encode(processor, [as_conversation(c) for c in inputs], max_length)
        framed = [processor.prompt_messages(as_conversation(c)) for c in inputs]
        features = super().encode(processor, framed, targets, labels, max_length, use_cache, augment, long_text)
        for meta in features.meta or []:
            if "conversation" in meta:
                meta["conversation"] = as_conversation(inputs[meta["example"]])
        return features

    def predict(self, model, features, batch_size: int = 8) -> dict:
        if features.processor.encoder_decoder:
            return seq2seq.predict(model, features, batch_size)
        return super().predict(model, features, batch_size)

    def training_loss(self, model, batch: dict, processor) -> tuple:
        if processor.encoder_decoder:
            return seq2seq.training_loss(model, batch, processor), {}
        return mean_answer_loss(model, batch, processor.label_smoothing), {}

    # ---- metrics ------------------------------------------------------------------------------
    def scores(self, hypotheses: list[str], refs: list[list[str]]) -> dict:
        raise NotImplementedError

    def score_line(self, metrics: dict) -> str:
        raise NotImplementedError

    def summary(self, metrics: dict) -> str:
        """The held-out loss, and the generated answers' scores when there are some."""
        line = f"loss {metrics['loss']:.4f}"
        if "length_ratio" in metrics:
            line += (f", {self.score_line(metrics)}, length ratio {metrics['length_ratio']:.2f} "
                     f"({metrics['answered']} sources)")
        return line

    def answer_metrics(self, model, processor, inputs: list) -> dict:
        """Generated targets for up to `eval_answers` distinct test sources, scored against all
        of each source's references; a few samples for the report."""
        rows = [_pair(as_conversation(c)) for c in inputs]
        grouped = references([s for s, _ in rows], [t for _, t in rows])
        sources = list(grouped)[: processor.eval_answers]
        if not sources:
            return {}
        prompts = [processor.prompt_text([{"role": "user", "content": s}]) for s in sources]
        answers = [a.strip() for a in processor.generate(model, prompts, processor.generation())]
        samples = [{"prompt": s, "reference": grouped[s][0], "answer": a} for s, a in list(zip(sources, answers))[:SAMPLES]]
        return {**self.scores(answers, [grouped[s] for s in sources]), "samples": samples}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        metrics = self.metrics(test_targets, self.predict(model, test), labels)
        conversations = [m["conversation"] for m in test.meta if "conversation" in m]
        return {**metrics, **self.answer_metrics(model, test.processor, conversations),
                "description": "the pretrained model as it is, before tuning"}

    # ---- `predict` on a file: targets for sources ---------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        table = read_source(path, encoding).get("all")
        if table is None:
            raise UserError(f"{path}: give a CSV, TSV, JSONL, Parquet or text file of source texts")
        column = pick_column(table, text_col, SOURCE_COLUMNS, "source", "--text-col")
        rows = table.frame.to_dict("records")
        return rows, [[{"role": "user", "content": str(row[column])}] for row in rows]


class Summarization(TextToTextTask):
    name = "summarization"
    pipeline_tag = "summarization"
    builtin_data = ("aclsum",)
    default_template = "Summarize the following text.\n\n{source}"

    def scores(self, hypotheses, refs) -> dict:
        return summary_scores(hypotheses, refs)

    def score_line(self, metrics: dict) -> str:
        return (f"ROUGE-1 {metrics['rouge_1']:.4f}, ROUGE-2 {metrics['rouge_2']:.4f}, ROUGE-L {metrics['rouge_l']:.4f}")

    def length_warnings(self, report, source_ids, target_ids, max_length, encoder_decoder) -> None:
        super().length_warnings(report, source_ids, target_ids, max_length, encoder_decoder)
        longer = sum(len(t) > len(s) for s, t in zip(source_ids, target_ids))
        if longer:
            report.warnings.append(f"{longer} pairs have a summary longer than its source; check the columns are not "
                                   "swapped")


class Translation(TextToTextTask):
    name = "translation"
    pipeline_tag = "translation"
    builtin_data = ("tatoeba-zh-en",)
    default_template = "Translate the following {source_lang} text into {target_lang}.\n\n{source}"

    def template(self, cfg, encoder_decoder: bool = False) -> str:
        template = super().template(cfg, encoder_decoder)
        if ("{source_lang}" in template and not cfg.source_lang) or ("{target_lang}" in template and not cfg.target_lang):
            raise UserError("translation: give --source-lang and --target-lang (language codes such as zh and en; "
                            "columns of those names are read as the source and the target)")
        return template

    def scores(self, hypotheses, refs) -> dict:
        return translation_scores(hypotheses, refs)

    def score_line(self, metrics: dict) -> str:
        return f"chrF {metrics['chrf']:.2f}, BLEU {metrics['bleu']:.2f} ({metrics['bleu_tokenize']} tokens)"


def _given_splits(cfg) -> dict[str, Examples | None]:
    """The pairs of --data's own splits, with --val-data / --test-data in place of its own."""
    def read(name: str) -> dict[str, Examples]:
        return read_pairs(name, cfg.encoding, cfg.source_lang, cfg.target_lang)

    tables = read(cfg.data)
    given = {"train": tables.get("all") or tables.get("train"), "val": tables.get("val"), "test": tables.get("test")}
    for key, flag in (("val", cfg.val_data), ("test", cfg.test_data)):
        if flag:
            given[key] = read(flag)["all"]
    return given


def _as_conversations(examples: Examples) -> Examples:
    """(source, target) rows as conversations: the source the user's turn, the target the answer."""
    texts = [[{"role": "user", "content": s}, {"role": "assistant", "content": t}]
             for s, t in zip(examples.texts, examples.labels)]
    return Examples(texts, [""] * len(texts), examples.source, examples.where)


def _pair(conversation) -> tuple[str, str]:
    return conversation[0]["content"], conversation[-1]["content"] if conversation[-1]["role"] == "assistant" else ""


register_task(Summarization())
register_task(Translation())
