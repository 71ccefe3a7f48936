"""Scores of generated text against references, with the libraries the field uses.

Translation: sacreBLEU's corpus BLEU and chrF (Post 2018), BLEU with its `zh` tokenizer when the
targets are Chinese (characters are its words) and `13a` otherwise; chrF reads characters either
way. Summarization: ROUGE-1, ROUGE-2 and ROUGE-L F-measures from Google's `rouge-score` (with
stemming), per character for Chinese targets (its default tokenizer drops every character that
is not a-z or 0-9, so Chinese would score nothing). Several references per source are allowed:
BLEU and chrF take them all, ROUGE the best. Both report the length ratio (generated over
reference length, in the metric's units), which tells a too-short output from a wrong one.
"""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def is_chinese(texts: list[str]) -> bool:
    """Whether most of the texts' letters are Chinese characters."""
    joined = "".join(texts)
    letters = sum(ch.isalpha() for ch in joined)
    return letters > 0 and len(CJK.findall(joined)) / letters > 0.5


def translation_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU and chrF of `hypotheses` (one per source) against each source's references."""
    from sacrebleu.metrics import BLEU, CHRF

    chinese = is_chinese([r[0] for r in references])
    width = max(len(r) for r in references)
    # sacreBLEU takes reference streams: the k-th reference of every source (None where a source has fewer).
    streams = [[r[k] if k < len(r) else None for r in references] for k in range(width)]
    bleu = BLEU(tokenize="zh" if chinese else "13a").corpus_score(hypotheses, streams)
    chrf = CHRF().corpus_score(hypotheses, streams)
    return {"bleu": float(bleu.score), "chrf": float(chrf.score), "length_ratio": float(bleu.sys_len / max(bleu.ref_len, 1)),
            "bleu_tokenize": "zh" if chinese else "13a", "answered": len(hypotheses)}


class _Characters:
    """rouge-score's tokenizer interface, one token per non-space character."""

    def tokenize(self, text: str) -> list[str]:
        return [ch for ch in text.lower() if not ch.isspace()]


def summary_scores(hypotheses: list[str], references: list[list[str]]) -> dict:
    """Mean ROUGE-1/2/L F-measure over sources, each the best over its references."""
    from rouge_score import rouge_scorer

    chinese = is_chinese([r[0] for r in references])
    kinds = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(kinds), use_stemmer=not chinese, tokenizer=_Characters() if chinese else None)
    totals = {kind: 0.0 for kind in kinds}
    generated_length = reference_length = 0
    for hypothesis, options in zip(hypotheses, references):
        scores = [scorer.score(reference, hypothesis) for reference in options]
        for kind in kinds:
            totals[kind] += max(s[kind].fmeasure for s in scores)
        generated_length += len(_units(hypothesis, chinese))
        reference_length += len(_units(options[0], chinese))
    n = max(len(hypotheses), 1)
    return {"rouge_1": totals["rouge1"] / n, "rouge_2": totals["rouge2"] / n, "rouge_l": totals["rougeL"] / n,
            "length_ratio": generated_length / max(reference_length, 1), "rouge_units": "characters" if chinese else "words",
            "answered": len(hypotheses)}


def _units(text: str, chinese: bool) -> list[str]:
    return _Characters().tokenize(text) if chinese else text.split()
