"""Entity-level precision, recall and F1 (seqeval's default semantics, strict span match).

An entity counts as found only when its type and both boundaries match a gold entity
exactly; a predicted entity that is one word too long is a false positive AND a false
negative. This is the CoNLL-2003 shared-task metric that published NER numbers use.
"""

from __future__ import annotations

from collections import Counter

from tunesmith.data.tagged import spans


def entity_metrics(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    true_pos, n_pred, n_gold = Counter(), Counter(), Counter()
    words = correct_words = 0
    for g, p in zip(gold, predicted, strict=True):
        gold_spans, pred_spans = set(spans(g)), set(spans(p))
        for kind, *_ in gold_spans:
            n_gold[kind] += 1
        for kind, *_ in pred_spans:
            n_pred[kind] += 1
        for kind, *_ in gold_spans & pred_spans:
            true_pos[kind] += 1
        words += len(g)
        correct_words += sum(a == b for a, b in zip(g, p))

    def prf(tp: int, pred: int, gold: int) -> tuple[float, float, float]:
        precision = tp / pred if pred else 0.0
        recall = tp / gold if gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return precision, recall, f1

    per_type = {}
    for kind in sorted(set(n_gold) | set(n_pred)):
        p, r, f = prf(true_pos[kind], n_pred[kind], n_gold[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": n_gold[kind]}
    precision, recall, f1 = prf(sum(true_pos.values()), sum(n_pred.values()), sum(n_gold.values()))
    gold_types = [k for k in per_type if n_gold[k]]
    return {
        "f1": f1,  # micro-averaged over entities: the headline CoNLL number
        "precision": precision,
        "recall": recall,
        "macro_f1": sum(per_type[k]["f1"] for k in gold_types) / len(gold_types) if gold_types else 0.0,
        "accuracy": correct_words / words if words else 0.0,  # word-level tag accuracy
        "count": len(gold),
        "entities": sum(n_gold.values()),
        "per_class": per_type,
    }


HIGHER_IS_BETTER = {"f1": True, "precision": True, "recall": True, "macro_f1": True, "accuracy": True}
