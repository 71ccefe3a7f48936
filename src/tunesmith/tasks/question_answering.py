"""Extractive question answering: the span of a context that answers a question.

The model is transformers' `AutoModelForQuestionAnswering` (a start and an end logit per
token), so a finished run's folder loads in transformers alone (the model card shows how; the
`question-answering` pipeline of transformers 4 reads it too). A
question and its context are read as one pair of sequences; a context longer than the model
reads is cut into windows that overlap by a third of `max_length` (Hugging Face's 128 of 384),
so an answer cut by one window's edge is whole in the next. Each window is trained to point at
the answer when it holds it whole and at its first token ([CLS]) otherwise, the recipe of BERT
on SQuAD 2.0 (Devlin et al. 2019).

Decoding takes, in every window, the 20 best start and end tokens inside the context, keeps the
spans of at most 30 tokens that end after they start, and answers with the best span over all
windows, mapped back to the context's characters. The no-answer score is the [CLS] pair's, the
lowest over the windows; when training data has unanswerable questions, the margin by which
it must beat the best span is tuned on validation for the best F1 (SQuAD 2.0's best threshold)
and saved in the model's config.

Splits are cut by context: questions on one passage never straddle train and test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tunesmith.data import questions as qa_data
from tunesmith.data.batching import Features, collate_rows, inference_batches
from tunesmith.data.checks import CheckReport, check_shared_keys
from tunesmith.data.labeled import Examples
from tunesmith.data.split import sample_splits, stratified_indices
from tunesmith.data.splits import Splits
from tunesmith.errors import UserError
from tunesmith.evaluate.answers import answer_metrics, score
from tunesmith.tasks import TaskDefaults, register_task

N_BEST = 20  # start and end candidates per window (Hugging Face's run_qa.py n_best_size)
MAX_ANSWER_TOKENS = 30  # the longest answer span, in tokens (run_qa.py's max_answer_length)
STRIDE_SHARE = 3  # windows overlap by max_length // 3 tokens (run_qa.py: 128 of 384)
THRESHOLD_KEY = "tunesmith_no_answer_threshold"  # in config.json, when tuned on validation
MAX_QUESTIONS = 64  # questions one served input may ask about its context


@dataclass
class SpanFeatures(Features):
    """Windows of (question, context) pairs: `meta[i]` is window i's question and its tokens'
    character offsets in the context (None outside it); `contexts` holds each question's
    context; `asked` maps each input to its question's index, or to a list of them."""

    contexts: list[str] = field(default_factory=list)
    asked: list = field(default_factory=list)


class QuestionAnswering(TaskDefaults):
    name = "question-answering"
    pipeline_tag = "question-answering"
    answer = "answer"
    input_kind = "question"
    peft_task_type = "QUESTION_ANS"
    default_model = "minilm"
    default_max_length = 384  # SQuAD's standard window; short contexts are padded only to their own length
    metrics_higher_is_better = {"f1": True, "exact_match": True}
    default_metric = "f1"
    has_baseline = True
    baseline_name = "a linear probe on the untuned token states (start and end)"
    exportable = True  # token ids in, a start and an end logit per token out (stacked in the graph)
    quantisable = True
    # Span heads read every token's state; prompt methods (refused by their own check) would
    # shift the positions. AdaLoRA, IA3, adapters and BitFit tune the body as LoRA does.
    train_defaults = {"method": "full"}
    QA_LR = {"full": 1e-4}

    def default_lr(self, method: str, model: str) -> float | None:
        return self.QA_LR.get(method)

    # ---- data -------------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("no training data: pass --data FILE (SQuAD JSON, or JSONL/CSV with context, question, "
                            "answers) or a folder")
        read = qa_data.read_source(cfg.data, cfg.encoding)
        warnings = read.warnings
        train = read.splits.get("train", read.splits.get("all"))
        val = qa_data.read_file(cfg.val_data, cfg.encoding, True, warnings) if cfg.val_data else read.splits.get("val")
        test = qa_data.read_file(cfg.test_data, cfg.encoding, True, warnings) if cfg.test_data else read.splits.get("test")
        notes: list[str] = []
        if val is None or test is None:
            train, val, test = _carve_by_context(train, val, test, cfg, notes)
        splits = sample_splits([_examples(group, cfg.data) for group in (train, val, test)], cfg, "questions", notes,
                               _strata)
        if not any(splits[0].labels):
            raise UserError(f"{cfg.data}: no training question has an answer; give answers with their offsets")
        unanswerable = sum(not answers for answers in splits[0].labels)
        notes.append(f"{len(splits[0])} training questions, {unanswerable} of them unanswerable")
        return Splits(*splits, [], "question", "answers", notes, warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        read = qa_data.read_source(source, encoding)
        return _examples(read.splits.get("test", read.splits.get("all")), source)

    def check(self, splits: Splits, tokenizer, max_length: int) -> CheckReport:
        report = CheckReport()
        parts = {"train": splits.train, "val": splits.val, "test": splits.test}
        report.facts["rows"] = {name: len(ex) for name, ex in parts.items()}
        report.facts["notes"] = list(splits.notes)
        report.facts["unanswerable"] = {name: sum(not a for a in ex.labels) for name, ex in parts.items()}
        report.warnings += splits.warnings
        check_shared_keys(report, parts, "context", "questions are about contexts that train also has")
        if tokenizer is not None:
            _check_lengths(report, parts, tokenizer, max_length)
        return report

    # ---- model ------------------------------------------------------------------------------
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        from transformers import AutoModelForQuestionAnswering

        try:
            return AutoModelForQuestionAnswering.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise UserError(f"--model {source}: cannot load it for question answering "
                            f"({str(exc).splitlines()[0]})") from None

    def load_model(self, folder: str):
        from transformers import AutoModelForQuestionAnswering

        return AutoModelForQuestionAnswering.from_pretrained(folder, use_safetensors=True)  # never unpickled

    def load_processor(self, source: str, cfg=None):
        from tunesmith import models

        tokenizer = models.load_tokenizer(source)
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"--model {source}: its tokenizer gives no character offsets (not a fast tokenizer); "
                            "question answering maps answers to characters with them")
        return tokenizer

    # ---- features, prediction, metrics --------------------------------------------------------
    def encode(self, tokenizer, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> SpanFeatures:
        """Windows of every (question, context) pair; with targets, the answer's first and last
        token in each window that holds it whole, else [CLS] (position 0)."""
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        features = SpanFeatures([], pad_id)
        for k, value in enumerate(inputs):
            asked = value["question"]
            indices = []
            for question in ([asked] if isinstance(asked, str) else asked):
                number = len(features.contexts)
                features.contexts.append(value["context"])
                answers = targets[k] if targets is not None else None  # training inputs ask one question
                for row, offsets in _windows(tokenizer, question, value["context"], max_length):
                    if answers is not None:
                        row["start_positions"], row["end_positions"] = _positions(offsets, answers)
                    features.rows.append(row)
                    features.meta.append({"question": number, "offsets": offsets})
                indices.append(number)
            features.asked.append(indices[0] if isinstance(asked, str) else indices)
        return features

    def predict(self, model, features: SpanFeatures, batch_size: int = 32) -> list:
        """One answer per input ({answer, start, end, score, no_answer_margin}), or a list of
        them for an input that asks several questions."""
        threshold = getattr(model.config, THRESHOLD_KEY, None)
        found = _decode(features, *_span_logits(model, features, batch_size), threshold)
        return [found[i] if isinstance(i, int) else [found[k] for k in i] for i in features.asked]

    def metrics(self, targets, outputs, labels) -> dict:
        return answer_metrics([o["answer"] for o in outputs], [[a["text"] for a in t] for t in targets])

    def summary(self, metrics: dict) -> str:
        line = f"F1 {metrics['f1']:.4f}, exact match {metrics['exact_match']:.4f} ({metrics['count']} questions)"
        if "no_answer_f1" in metrics:
            line += (f"; answerable F1 {metrics['has_answer_f1']:.4f}, unanswerable F1 "
                     f"{metrics['no_answer_f1']:.4f}")
        return line

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        """The no-answer margin with the best validation F1, when validation has unanswerable
        questions (else every question is answered)."""
        if all(targets):
            return {}
        outputs = self.predict(model, features)
        threshold = best_threshold(outputs, [[a["text"] for a in t] for t in targets])
        model.config.tunesmith_no_answer_threshold = threshold
        return {"no_answer_threshold": threshold}

    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict:
        """The span probe on the untuned body: its start and end logits decoded as the model's."""
        from tunesmith.evaluate.baseline import SPAN_PROBE_WINDOWS, fit_span_probe

        body = getattr(model, model.base_model_prefix)
        weight, bias = fit_span_probe(body, train.rows, train.pad_id, seed)
        probe = _ProbeHead(body, weight, bias)
        found = _decode(test, *_span_logits(probe, test, 32), None)
        scores = self.metrics(test_targets, [found[i] for i in test.asked], labels)
        return scores | {"fit_windows": min(len(train.rows), SPAN_PROBE_WINDOWS)}

    def start_head(self, model, train, train_targets, labels, seed) -> str:
        """The head starts as the span probe (as a mean-pooled classifier starts as its probe)."""
        from tunesmith.evaluate.baseline import fit_span_probe

        weight, bias = fit_span_probe(getattr(model, model.base_model_prefix), train.rows, train.pad_id, seed)
        with torch.no_grad():
            model.qa_outputs.weight.copy_(torch.as_tensor(weight))
            model.qa_outputs.bias.copy_(torch.as_tensor(bias))
        return "head: starts as the linear probe on the untuned token states"

    # ---- `predict` on a file, serving ----------------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        found = qa_data.read_file(path, encoding, need_answers=False)
        return [q.as_input() for q in found], [q.as_input() for q in found]

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        from tunesmith.forward import write_rows

        write_rows(path, [{**row, "answer": o["answer"], "answer_start": o["start"], "answer_end": o["end"],
                           "score": o["score"]} for row, o in zip(rows, outputs)])

    def serve_input(self, value, pairs: bool):
        if not isinstance(value, dict) or not {"question", "context"} <= set(value):
            raise ValueError('this model answers questions: give {"question": ..., "context": ...}')
        asked, context = value["question"], value["context"]
        questions = [asked] if isinstance(asked, str) else asked
        if not isinstance(context, str) or not context.strip():
            raise ValueError("context: give the passage to answer from (a non-empty string)")
        if not isinstance(questions, list) or not questions or len(questions) > MAX_QUESTIONS or \
                not all(isinstance(q, str) and q.strip() for q in questions):
            raise ValueError(f"question: give a non-empty string, or a list of 1 to {MAX_QUESTIONS} of them")
        return {"question": asked, "context": context}

    def sample_input(self, text: str, pairs: bool) -> dict:
        return {"question": text, "context": f"{text} {text[::-1]}"}

    def output_rows(self, outputs) -> list:
        return list(outputs)

    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict:
        if isinstance(row, list):
            return {"answers": [_served(one) for one in row]}
        return _served(row)

    def card_usage(self) -> list[str]:
        """transformers 5 has no question-answering pipeline: the span is read off the logits."""
        return ["```python", "import torch", "from transformers import AutoModelForQuestionAnswering, AutoTokenizer", "",
                'tokenizer = AutoTokenizer.from_pretrained("path/to/model")',
                'model = AutoModelForQuestionAnswering.from_pretrained("path/to/model")',
                'question, context = "Who wrote Notes?", "Ada wrote Notes in 1843."',
                'batch = tokenizer(question, context, truncation="only_second", return_offsets_mapping=True, '
                'return_tensors="pt")',
                'offsets = batch.pop("offset_mapping")[0]',
                "with torch.no_grad():", "    out = model(**batch)",
                "in_context = torch.tensor([s == 1 for s in batch.sequence_ids(0)])",
                f"near = torch.ones(len(offsets), len(offsets)).triu().tril({MAX_ANSWER_TOKENS - 1}).bool()  "
                f"# end after start, at most {MAX_ANSWER_TOKENS} tokens",
                "scores = out.start_logits[0][:, None] + out.end_logits[0][None, :]",
                "scores = scores.masked_fill(~(near & in_context[:, None] & in_context[None, :]), -1e4)",
                "start, end = divmod(int(scores.argmax()), len(offsets))",
                "answer = context[offsets[start][0]:offsets[end][1]]", "```", "",
                "Contexts longer than the model reads are cut into overlapping windows (`tunesmith predict` and "
                "`serve` do it). The answer is none when the [CLS] pair's score (`out.start_logits[0][0] + "
                f"out.end_logits[0][0]`) beats the best span's by more than `{THRESHOLD_KEY}` in config.json "
                "(present when training had unanswerable questions)."]


# ---- windows and answers ---------------------------------------------------------------------
def _windows(tokenizer, question: str, context: str, max_length: int):
    """(row, offsets) per window: the question whole (cut to half of max_length when longer) and
    as much context as fits, consecutive windows overlapping by up to max_length // 3 tokens."""
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    asked = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(asked["input_ids"]) > max_length // 2:
        question = question[: asked["offset_mapping"][max_length // 2 - 1][1]]
        asked = tokenizer(question, add_special_tokens=False)
    room = max_length - len(asked["input_ids"]) - specials
    if room < 2:
        raise UserError(f"--max-length {max_length}: too short to read a question and any of its context; raise it")
    stride = min(max_length // STRIDE_SHARE, room // 2)
    encoded = tokenizer(question, context, truncation="only_second", max_length=max_length, stride=stride,
                        return_overflowing_tokens=True, return_offsets_mapping=True)
    for k, ids in enumerate(encoded["input_ids"]):
        sequence = encoded.sequence_ids(k)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(encoded["offset_mapping"][k], sequence)]
        row = {"input_ids": list(ids)}
        if "token_type_ids" in encoded:
            row["token_type_ids"] = list(encoded["token_type_ids"][k])
        yield row, offsets


def _positions(offsets: list, answers: list[dict]) -> tuple[int, int]:
    """The first and last token of the first answer when this window holds it whole, else (0, 0)."""
    if not answers:
        return 0, 0
    start = answers[0]["answer_start"]
    end = start + len(answers[0]["text"])
    inside = [i for i, o in enumerate(offsets) if o is not None and o[1] > o[0]]
    if not inside or offsets[inside[0]][0] > start or offsets[inside[-1]][1] < end:
        return 0, 0
    first = next(i for i in inside if offsets[i][1] > start)
    last = next(i for i in reversed(inside) if offsets[i][0] < end)
    return first, max(first, last)


def _span_logits(model, features: SpanFeatures, batch_size: int) -> tuple[list, list]:
    """Start and end logits per window (numpy, one per token), shortest padding first."""
    from tunesmith.forward import evaluating

    starts, ends = [None] * len(features), [None] * len(features)
    with evaluating(model) as device:
        for indices in inference_batches(features.lengths, batch_size):
            rows = [{k: features.rows[i][k] for k in ("input_ids", "token_type_ids") if k in features.rows[i]}
                    for i in indices]
            batch = {k: v.to(device) for k, v in collate_rows(rows, features.pad_id).items()}
            out = model(**batch)
            start, end = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for row, i in enumerate(indices):
                width = len(features.rows[i]["input_ids"])
                starts[i], ends[i] = start[row, :width], end[row, :width]
    return starts, ends


def _decode(features: SpanFeatures, starts: list, ends: list, threshold: float | None) -> list[dict]:
    """Each question's answer: its best span over its windows, or none when the [CLS] score
    beats that span by more than `threshold` (None: always answer)."""
    best: list[dict | None] = [None] * len(features.contexts)
    null = [np.inf] * len(features.contexts)
    for meta, start, end in zip(features.meta, starts, ends):
        number = meta["question"]
        null[number] = min(null[number], float(start[0] + end[0]))
        span = _best_span(start, end, meta["offsets"])
        if span is not None and (best[number] is None or span["logit"] > best[number]["logit"]):
            best[number] = span
    answers = []
    for number, context in enumerate(features.contexts):
        span = best[number]
        if span is None:
            answers.append({"answer": "", "start": None, "end": None, "score": 0.0, "no_answer_margin": None})
            continue
        margin = null[number] - span["logit"]
        answered = threshold is None or margin <= threshold
        answers.append({"answer": context[span["start"]:span["end"]] if answered else "",
                        "start": span["start"] if answered else None, "end": span["end"] if answered else None,
                        "score": span["score"], "no_answer_margin": round(margin, 6),
                        "best": context[span["start"]:span["end"]]})
    return answers


def _best_span(start: np.ndarray, end: np.ndarray, offsets: list) -> dict | None:
    """The best (start, end) token pair of one window: in the context, in order, at most
    MAX_ANSWER_TOKENS long; with its character span, logit sum and probability."""
    inside = np.array([i for i, o in enumerate(offsets) if o is not None and o[1] > o[0]])
    if not len(inside):
        return None
    firsts = inside[np.argsort(-start[inside])[:N_BEST]]
    lasts = inside[np.argsort(-end[inside])[:N_BEST]]
    total = start[firsts][:, None] + end[lasts][None, :]
    length = lasts[None, :] - firsts[:, None]
    total = np.where((length >= 0) & (length < MAX_ANSWER_TOKENS), total, -np.inf)
    i, j = np.unravel_index(int(np.argmax(total)), total.shape)
    if not np.isfinite(total[i, j]):
        return None
    first, last = int(firsts[i]), int(lasts[j])
    probability = _softmax_at(start, first) * _softmax_at(end, last)
    return {"start": offsets[first][0], "end": offsets[last][1], "logit": float(total[i, j]),
            "score": round(float(probability), 6)}


def _softmax_at(logits: np.ndarray, index: int) -> float:
    shifted = np.exp(logits - logits.max())
    return float(shifted[index] / shifted.sum())


def best_threshold(outputs: list[dict], references: list[list[str]]) -> float:
    """The no-answer margin with the highest total F1: a question is answered when its margin
    (no-answer score minus best span's) is at most the threshold."""
    margins, gain = [], []
    for output, refs in zip(outputs, references):
        if output["no_answer_margin"] is None:
            continue
        answered, empty = score(output["best"], refs)[1], score("", refs)[1]
        margins.append(output["no_answer_margin"])
        gain.append(answered - empty)  # what answering this question adds over leaving it empty
    if not margins:
        return 0.0
    order = np.argsort(margins)
    totals = np.cumsum(np.asarray(gain)[order])  # answer the k+1 questions of smallest margin
    k = int(np.argmax(totals))
    if totals[k] <= 0:  # answering none is best: a threshold below every margin
        return float(np.asarray(margins)[order[0]] - 1.0)
    return float(np.asarray(margins)[order[k]])


def _served(answer: dict) -> dict:
    return {"answer": answer["answer"], "start": answer["start"], "end": answer["end"], "score": answer["score"]}


class _ProbeHead(torch.nn.Module):
    """The untuned body with the span probe as its QA head (the baseline's model)."""

    def __init__(self, body, weight: np.ndarray, bias: np.ndarray):
        super().__init__()
        self.body = body
        self.head = torch.nn.Linear(weight.shape[1], 2)
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight))
            self.head.bias.copy_(torch.as_tensor(bias))

    def forward(self, **batch):
        from types import SimpleNamespace

        logits = self.head(self.body(**batch).last_hidden_state.float())
        return SimpleNamespace(start_logits=logits[..., 0], end_logits=logits[..., 1])


# ---- data helpers ------------------------------------------------------------------------------
def _examples(found: list[qa_data.Question], source) -> Examples:
    return Examples([q.as_input() for q in found], [q.as_target() for q in found], str(source),
                    [q.where for q in found])


def _strata(targets: list) -> list[str]:
    """Sampling keeps the share of unanswerable questions."""
    return ["answer" if t else "none" for t in targets]


def _carve_by_context(train, val, test, cfg, notes: list[str]):
    """Validation and test carved from training by context: every question on one passage lands
    in one split (exact repeats of a question on a context dropped first)."""
    seen, unique = set(), []
    for q in train:
        if (q.context, q.question) not in seen:
            seen.add((q.context, q.question))
            unique.append(q)
    if len(unique) < len(train):
        notes.append(f"removed {len(train) - len(unique)} repeated questions before splitting")
    contexts = list(dict.fromkeys(q.context for q in unique))
    missing = [name for name, split in (("val", val), ("test", test)) if split is None]
    fractions = [cfg.val_fraction if name == "val" else cfg.test_fraction for name in missing]
    groups = stratified_indices(["all"] * len(contexts), fractions, cfg.seed)
    group_of = {contexts[i]: k for k, members in enumerate(groups) for i in members}
    parts = [[q for q in unique if group_of[q.context] == k] for k in range(len(groups))]
    carved = {name: parts[k] for k, name in enumerate(missing)}
    val, test = carved.get("val", val), carved.get("test", test)
    train = parts[-1]
    notes.append(f"split {cfg.data} by context: train {len(train)}/val {len(val)}/test {len(test)} questions "
                 f"(seed {cfg.seed})")
    return train, val, test


def _check_lengths(report: CheckReport, parts: dict, tokenizer, max_length: int) -> None:
    """Token counts of question + context; long ones are read in windows (a fact, not a fault),
    a question over half of max_length is cut (a warning)."""
    pairs = [pair for ex in parts.values() for pair in ex.texts]
    where = [w for ex in parts.values() for w in ex.where]
    question_lengths = np.array([len(ids) for ids in tokenizer([p["question"] for p in pairs],
                                                               add_special_tokens=False)["input_ids"]])
    context_lengths = np.array([len(ids) for ids in tokenizer([p["context"] for p in pairs],
                                                              add_special_tokens=False)["input_ids"]])
    lengths = question_lengths + context_lengths + tokenizer.num_special_tokens_to_add(pair=True)
    windowed = int((lengths > max_length).sum())
    report.facts["token_lengths"] = {"count": int(len(lengths)), "p50": int(np.percentile(lengths, 50)),
                                     "p90": int(np.percentile(lengths, 90)), "p99": int(np.percentile(lengths, 99)),
                                     "max": int(lengths.max()), "max_length": max_length, "truncated": 0,
                                     "truncated_pct": 0.0}
    report.facts["windowed"] = windowed
    long = np.flatnonzero(question_lengths > max_length // 2)
    if len(long):
        report.warnings.append(f"{len(long)} questions are longer than half of max_length ({max_length // 2} tokens) "
                               f"and will be cut ({', '.join(where[i] for i in long[:3])})")


register_task(QuestionAnswering())
