"""Data checks that run before any compute is spent (`tunesmith check`, and at the start of `train`).

Fatal problems (missing columns, empty labels, one class, labels unseen in training) are
raised by `load_splits` as errors. What remains are findings: warnings worth reading before
training, and facts (sizes, balance, length percentiles).
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tunesmith.data.labeled import Examples
from tunesmith.data.splits import Splits
from tunesmith.data.text import letter_scripts

SHOW = 3  # how many example locations a finding lists
# Above this share of [UNK] tokens the model is reading another language blind: MiniLM's
# English vocabulary turns 63% of Chinese characters into [UNK] (issue 21).
UNKNOWN_WARN = 0.05


@dataclass
class CheckReport:
    facts: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # whole sections printed before the warnings (data quality)

    def to_text(self) -> str:
        f = self.facts
        lines = [f"rows: train {f['rows']['train']}, val {f['rows']['val']}, test {f['rows']['test']}"]
        if "label_counts" in f:
            lines.append(f"labels ({len(f['label_counts'])}): " + ", ".join(f"{k} {v}" for k, v in f["label_counts"].items()))
            lines.append(f"imbalance ratio (largest / smallest class in train): {f['imbalance_ratio']:.1f}")
        if "target" in f:
            t = f["target"]
            lines.append(f"target (train): min {t['min']:g}, p50 {t['p50']:g}, max {t['max']:g}, mean {t['mean']:g}, std {t['std']:g}")
        if f.get("scripts"):
            lines.append("writing system (letters, train): " + ", ".join(f"{k} {v:.0f}%" for k, v in f["scripts"].items()))
        if "char_lengths" in f:
            c = f["char_lengths"]
            lines.append(f"character lengths: p50 {c['p50']}, p90 {c['p90']}, p99 {c['p99']}, max {c['max']}")
        if f.get("unknown_token_pct"):
            lines.append(f"unknown tokens ([UNK]): {f['unknown_token_pct']:.1f}% of all tokens")
        if "token_lengths" in f:
            t = f["token_lengths"]
            lines.append(
                f"token lengths: p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}; "
                f"{t['truncated']} of {t['count']} texts ({t['truncated_pct']:.1f}%) longer than max_length {t['max_length']}"
                + (f" ({t['tokens_cut']} tokens cut)" if "tokens_cut" in t else "")
            )
        if "preview" in f:
            lines.append("first training example, exactly as the model sees it:\n" + "-" * 40 + "\n" + f["preview"]
                         + "\n" + "-" * 40)
        for note in f.get("notes", []):
            lines.append(f"note: {note}")
        lines.extend(self.sections)
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        lines.append(f"{len(self.warnings)} warning(s), 0 errors")
        return "\n".join(lines)


def check_splits(splits: Splits, tokenizer=None, max_length: int = 128, count_labels=Counter) -> CheckReport:
    """`count_labels(train labels)` counts examples per class (labels per example for
    multi-label); None for numeric targets, which get their spread reported instead."""
    report = CheckReport()
    parts = {"train": splits.train, "val": splits.val, "test": splits.test}
    report.facts["rows"] = {name: len(ex) for name, ex in parts.items()}
    report.facts["notes"] = list(splits.notes)
    _check_labels(report, splits.train.labels, count_labels)
    _describe_text(report, splits.train.texts, parts)
    folded_texts = {name: [folded(t) for t in ex.texts] for name, ex in parts.items()}  # each text folded once
    for name, ex in parts.items():
        _check_rows(report, name, ex, folded_texts[name])
    _check_leakage(report, parts, folded_texts)
    if tokenizer is not None:
        _check_tokens(report, splits.train.texts + splits.val.texts + splits.test.texts, tokenizer, max_length)
    return report


def _check_labels(report: CheckReport, labels: list, count_labels) -> None:
    """Class counts and imbalance, or a numeric target's spread."""
    counts = count_labels(labels)
    if counts is None:
        values = np.asarray(labels, dtype=float)
        report.facts["target"] = {"min": float(values.min()), "p50": float(np.median(values)), "max": float(values.max()),
                                  "mean": float(values.mean()), "std": float(values.std())}
        return
    report.facts["label_counts"] = dict(counts.most_common())
    report.facts["imbalance_ratio"] = max(counts.values()) / min(counts.values())
    if report.facts["imbalance_ratio"] >= 10:
        report.warnings.append(
            f"labels are imbalanced ({report.facts['imbalance_ratio']:.0f}:1); watch macro-F1, not only accuracy")
    for label, count in counts.items():
        if count < 5:
            report.warnings.append(f"label '{label}' has only {count} training example(s)")


def _describe_text(report: CheckReport, train_texts: list, parts: dict) -> None:
    """The writing systems of the training text (Chinese vs English, not English vs German) and
    character lengths: the text described before any tokenizer has read it."""
    scripts = letter_scripts(train_texts, limit=len(train_texts))
    letters = sum(scripts.values())
    if letters:
        report.facts["scripts"] = {k: round(100 * v / letters, 1) for k, v in scripts.most_common() if v / letters >= 0.005}
    chars = np.array([_characters(t) for ex in parts.values() for t in ex.texts])
    if len(chars):
        report.facts["char_lengths"] = {q: int(np.percentile(chars, n)) for q, n in (("p50", 50), ("p90", 90), ("p99", 99))}
        report.facts["char_lengths"]["max"] = int(chars.max())


def _check_rows(report: CheckReport, name: str, ex, folded_texts: list) -> None:
    """Empty texts, repeated texts (as written and once folded) and conflicting labels in one split."""
    empty = [i for i, t in enumerate(ex.texts) if not all(part.strip() for part in (t if isinstance(t, tuple) else (t,)))]
    if empty:
        report.warnings.append(f"{name}: {len(empty)} empty or whitespace-only texts ({_where(ex, empty)})")
    dup, conflicting = _duplicates(ex)
    if dup:
        report.warnings.append(f"{name}: {len(dup)} rows repeat an earlier text ({_where(ex, dup)})")
    variants = sorted(set(_duplicates(ex, folded_texts)[0]) - set(dup))
    if variants:
        report.warnings.append(f"{name}: {len(variants)} more rows repeat an earlier text once {FOLDED} are "
                               f"ignored ({_where(ex, variants)})")
    if conflicting:
        report.warnings.append(f"{name}: {conflicting} texts appear with different labels")


def _check_leakage(report: CheckReport, parts: dict, folded_texts: dict) -> None:
    """A text in both the training data and an evaluation split inflates the score: as
    written, or in another form (full-width letters, case, spacing, traditional characters)."""
    train_texts = set(parts["train"].texts)
    train_folded = set(folded_texts["train"])
    for name in ("val", "test"):
        ex = parts[name]
        shared = [i for i, t in enumerate(ex.texts) if t in train_texts]
        report.facts[f"train_{name}_overlap"] = len(shared)
        if shared:
            report.warnings.append(f"{len(shared)} {name} texts also appear in train (leakage: the {name} score will be "
                                   f"too high) ({_where(ex, shared)})")
        variants = [i for i, (t, key) in enumerate(zip(ex.texts, folded_texts[name]))
                    if t not in train_texts and key in train_folded]
        report.facts[f"train_{name}_overlap_folded"] = len(variants)
        if variants:
            report.warnings.append(
                f"{len(variants)} {name} texts appear in train in another form ({FOLDED}; leakage) ({_where(ex, variants)})")


def check_shared_keys(report: CheckReport, parts: dict, key, phrase: str) -> None:
    """Leakage for structured examples: validation and test rows whose key (a query, a context,
    a source) training also has, each split's count in the facts and a warning `phrase` names.
    `key` names a field of dict rows, or is a function of a row."""
    key_of = key if callable(key) else lambda row: row[key]
    seen = {key_of(row) for row in parts["train"].texts}
    for name in ("val", "test"):
        ex = parts[name]
        shared = [i for i, row in enumerate(ex.texts) if key_of(row) in seen]
        report.facts[f"train_{name}_overlap"] = len(shared)
        if shared:
            report.warnings.append(f"{len(shared)} {name} {phrase} (leakage: the {name} score will be too high) "
                                   f"({_where(ex, shared)})")


def _check_tokens(report: CheckReport, all_texts: list, tokenizer, max_length: int) -> None:
    """Token lengths against max_length, and the share of tokens the tokenizer cannot read."""
    if all_texts and isinstance(all_texts[0], tuple):  # pairs: both texts, as the model sees them
        encoded = tokenizer([a for a, _ in all_texts], [b for _, b in all_texts], add_special_tokens=True)
    else:
        encoded = tokenizer(all_texts, add_special_tokens=True)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    unknown = unknown_share(tokenizer, encoded["input_ids"])
    if unknown is not None:
        report.facts["unknown_token_pct"] = round(100 * unknown, 2)
        if unknown > UNKNOWN_WARN:
            report.warnings.append(
                f"{100 * unknown:.0f}% of the tokens are unknown to the model's tokenizer ([UNK]): it cannot read "
                "much of this text (another language or script?); choose a model whose vocabulary covers it (--model)")
    truncated = int((lengths > max_length).sum())
    report.facts["token_lengths"] = {
        "count": int(len(lengths)), "p50": int(np.percentile(lengths, 50)), "p90": int(np.percentile(lengths, 90)),
        "p99": int(np.percentile(lengths, 99)), "max": int(lengths.max()), "max_length": max_length,
        "truncated": truncated, "truncated_pct": 100.0 * truncated / len(lengths),
    }
    if truncated / len(lengths) > 0.05:
        report.warnings.append(
            f"{truncated} texts ({100.0 * truncated / len(lengths):.0f}%) will be truncated at max_length "
            f"{max_length}; {longer_max_length(int(np.percentile(lengths, 99)), tokenizer)}")


def unknown_share(tokenizer, token_ids: list[list[int]]) -> float | None:
    """The share of tokens that are the tokenizer's unknown token, special tokens excluded;
    None when it has none (byte-level tokenizers can spell anything)."""
    unk = getattr(getattr(tokenizer, "tokenizer", tokenizer), "unk_token_id", None)
    if unk is None:
        return None
    special = set(getattr(tokenizer, "all_special_ids", [])) - {unk}
    counted = [t for ids in token_ids for t in ids if t not in special]
    return sum(t == unk for t in counted) / len(counted) if counted else None


def splits_report(splits) -> CheckReport:
    """A task's check report started with what every split-reading task reports: rows per
    split, and the notes and warnings from reading the data."""
    report = CheckReport()
    report.facts["rows"] = {name: len(getattr(splits, name)) for name in ("train", "val", "test")}
    report.facts["notes"] = list(splits.notes)
    report.warnings += splits.warnings
    return report


def longer_max_length(p99: int, tokenizer) -> str:
    """The advice for texts longer than max_length: their 99th percentile, but never more
    than the model reads (its position embeddings end there: more would crash)."""
    limit = token_limit(tokenizer)
    if limit is not None and p99 > limit:
        return (f"the model reads at most {limit} tokens: consider --max-length {limit}, and --long-text chunk "
                "(or head-tail) to read past it")
    return f"consider --max-length {p99}"


def token_limit(tokenizer) -> int | None:
    """The most tokens the model takes (set from its config by `models.hold_to_limit`)."""
    limit = getattr(getattr(tokenizer, "tokenizer", tokenizer), "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 0 < limit < 10**6 else None


FOLDED = "width, case, spacing and traditional/simplified characters"


def folded(text) -> str:
    """The text with what does not change its meaning folded away: NFKC (full-width letters and
    digits to half-width), case, runs of whitespace, and traditional Chinese characters to
    simplified (OpenCC's t2s, when the pip package opencc-python-reimplemented is installed)."""
    if isinstance(text, (tuple, list)):
        return "\x1f".join(folded(part) for part in text)
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    converter = _t2s()
    if converter is not None and any("\u4e00" <= ch <= "\u9fff" for ch in text):
        text = converter.convert(text)
    return text


@functools.lru_cache(maxsize=1)
def _t2s():
    try:
        from opencc import OpenCC
    except ImportError:
        return None
    return OpenCC("t2s")


def _duplicates(ex: Examples, keys: list | None = None) -> tuple[list[int], int]:
    """Rows whose key (the text itself, or `keys[i]`, e.g. its folded form) an earlier row
    has, and how many such keys appear with different labels."""
    first_label: dict[str, str] = {}
    repeated, conflicting = [], set()
    for i, (text, label) in enumerate(zip(ex.texts if keys is None else keys, ex.labels)):
        if text in first_label:
            repeated.append(i)
            if first_label[text] != label:
                conflicting.add(text)
        else:
            first_label[text] = label
    return repeated, len(conflicting)


def _characters(text) -> int:
    """Characters of a text, of both texts of a pair, or of a sentence's words (NER)."""
    return len(text) if isinstance(text, str) else sum(len(str(part)) for part in text)


def _where(ex: Examples, indices: list[int]) -> str:
    if not ex.where:
        return f"{len(indices)} rows"
    shown = ", ".join(ex.where[i] for i in indices[:SHOW])
    return shown + (", ..." if len(indices) > SHOW else "")
