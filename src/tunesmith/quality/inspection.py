"""`inspect`: run a task's quality checks on its splits into a QualityReport (report.py), and
`leave_out`: act on it (train --drop-suspect-labels, --dedupe near)."""

from __future__ import annotations

import time

import numpy as np

from tunesmith.data import text
from tunesmith.quality import images, labels as label_checks, neighbours, outliers, overlap
from tunesmith.evaluate.features import embed_with, load_encoder
from tunesmith.quality.report import EVAL_SPLITS, QualityReport

NEAR_THRESHOLD = 0.95  # cosine of mean-pooled MiniLM features; measured in docs/benchmarks.md ("Data quality")
SHOW = 3  # examples printed per finding
# Below this out-of-fold agreement between the frozen-feature probe and the labels (Cohen's
# kappa: agreement beyond what the class shares give by chance, so 2 and 77 classes compare),
# the flags mix real label errors with rows that are merely hard: dropping them won back lost
# accuracy where the probe agreed well with the labels and nothing where it did not
# (docs/benchmarks.md, "Data quality").
RELIABLE_KAPPA = 0.7
# Below this kappa a run's training dynamics judged labels better than the probe did (sentence
# sentiment, kappa 0.23-0.47: more precise at the same recall), above it worse (banking77, 0.61-0.80:
# a fine-tuned model fits a few rows per class, mislabelled or not). Drawn from the nine
# planted-noise runs in docs/benchmarks.md ("Label errors the probe misses").
DYNAMICS_BETTER_BELOW_KAPPA = 0.55
TOP_PAIRS = 10  # (given, suggested) label pairs kept in the facts; the CSV has every row
SNIPPET = 60  # characters of a text shown in `check`'s output (never in a run's log)


def inspect(task, splits, source: str | None, tokenizer, max_length: int, near_threshold: float = NEAR_THRESHOLD,
            seed: int = 0, show_text: bool = False, log=lambda _: None, judge=None) -> QualityReport:
    """Run the task's quality checks on `splits`. `source`/`tokenizer`: the backbone whose
    features the text checks read. `show_text`: put short snippets of texts in the printed
    lines (for `check` in a terminal; a run's log keeps locations only). `judge(class_ids) ->
    (probabilities, judged mask, what judged)` replaces the frozen-feature probe as the source of
    out-of-fold probabilities for the label check (`check --deep`: fine-tuned runs)."""
    report = QualityReport()
    checks = set(task.quality_checks)
    started = time.perf_counter()
    if "images" in checks:
        _image_checks(report, splits)
    textual = checks & {"label-errors", "near-duplicates", "outliers", "text"}
    if "text" in checks:
        _text_checks(report, splits, show_text)
    if textual - {"text"} and source is not None:
        log("data quality: embedding every text with the pretrained model ...")
        embedding_started = time.perf_counter()
        encoder = load_encoder(source)
        x = {name: embed_with(encoder, tokenizer, getattr(splits, name).texts, max_length)
             for name in ("train", "val", "test")}
        del encoder
        report.facts["embedding_seconds"] = round(time.perf_counter() - embedding_started, 2)
        class_ids = _class_ids(splits) if checks & {"label-errors", "outliers"} else None
        if "near-duplicates" in checks:
            _near_duplicate_checks(report, splits, x, near_threshold, show_text)
        if "label-errors" in checks and class_ids is not None:
            if judge is None:
                probs, judged = label_checks.out_of_fold_probs(x["train"], class_ids, len(splits.labels), seed=seed)
                who = "a probe"
            else:
                probs, judged, who = judge(class_ids)
            _label_checks(report, splits, (probs, judged, who), class_ids, show_text)
        if "outliers" in checks and class_ids is not None:
            _outlier_checks(report, splits, x, class_ids, show_text)
    report.facts["seconds"] = round(time.perf_counter() - started, 2)
    if not report.lines:
        report.lines.append(f"no quality checks for {task.name} yet" if not checks else "nothing found")
    return report


# ---- text ---------------------------------------------------------------------------------

def _text_checks(report: QualityReport, splits, show_text: bool) -> None:
    empty_total = 0
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        empty = text.empty_after_normalising(part.texts)
        empty_total += len(empty)
        if empty:
            report.lines.append(f"{name}: {len(empty)} texts have no letters or digits once links and mentions are "
                                f"removed ({_examples(part, empty, show_text)})")
            report.warnings.append(f"{name}: {len(empty)} texts are empty after normalisation")
        report.tables.setdefault("outliers.csv", []).extend(
            _row(name, part, i, reason="empty after normalisation") for i in empty)
    report.facts["empty_after_normalisation"] = empty_total
    main, other = text.other_script_rows(splits.train.texts + splits.val.texts + splits.test.texts)
    report.facts["main_script"] = main
    report.facts["other_script"] = len(other)
    start = 0  # `other` counts rows of train, val and test in turn
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        rows = [i - start for i in other if start <= i < start + len(part)]
        start += len(part)
        if rows:
            report.lines.append(f"{name}: {len(rows)} texts are written mostly in another script than the data's "
                                f"{main} ({_examples(part, rows, show_text)})")
            report.tables.setdefault("outliers.csv", []).extend(
                _row(name, part, r, reason=f"not {main} script") for r in rows)
    if other:
        report.warnings.append(f"{len(other)} texts are not in the data's main script ({main}): another language?")


# ---- training dynamics --------------------------------------------------------------------

def training_suspects(dynamics, examples, names: list[str], probe_rows: set[int] | None = None) -> QualityReport:
    """The rows training dynamics flag (dynamics.py) among `examples` (the training split as
    read; augmented copies and replayed rows after it are not listed), as a report: a line, the
    counts in the facts, and training_suspect_labels.csv. `probe_rows`: the rows the
    frozen-feature probe flagged before training; rows both flag come first in the list, since
    two judges that share no model agree on few correct labels (docs/benchmarks.md, "Label
    errors the probe misses")."""
    report = QualityReport()
    suspects = [s for s in dynamics.suspects() if s.row < len(examples)]
    agreed = {s.row for s in suspects} & (probe_rows or set())
    suspects.sort(key=lambda s: s.row not in agreed)  # stable: most negative margin first within each group
    report.suspects = suspects
    report.facts["training_suspect_labels"] = {"count": len(suspects), "of": len(examples),
                                               "rule": "area under the margin < 0",
                                               **({"probe_agrees": len(agreed)} if probe_rows is not None else {})}
    if suspects:
        both = f", {len(agreed)} of them flagged by the probe before training too (listed first)" \
            if probe_rows is not None else ""
        report.lines.append(f"train: {len(suspects)} of {len(examples)} labels were out-voted by the model for most "
                            f"of training (negative area under the margin){both}: likely label errors, listed in "
                            "training_suspect_labels.csv")
    report.tables["training_suspect_labels.csv"] = [
        {**_suspect_row(examples, s, names), **({"probe_agrees": s.row in agreed} if probe_rows is not None else {})}
        for s in suspects]
    return report


# ---- embeddings ---------------------------------------------------------------------------

def _near_duplicate_checks(report: QualityReport, splits, x: dict, threshold: float, show_text: bool) -> None:
    report.facts["near_duplicates"] = {"threshold": threshold, "index": neighbours.backend()}
    index = overlap.TrainingIndex(splits.train.texts)
    report.facts["overlaps"] = {"span_words": index.span if index.spans_indexed else None, "span_unit": index.unit}
    for name in EVAL_SPLITS:
        part = getattr(splits, name)
        found = neighbours.near_duplicates(x["train"], x[name], threshold)
        report.near[name] = found
        report.facts["near_duplicates"][name] = len(found)
        near = {q for q, _, _ in found}
        _overlap_checks(report, splits, name, [o for o in overlap.overlapping_rows(index, part.texts) if o[0] not in near],
                        show_text)
        if not found:
            continue
        shown = ", ".join(f"{_where(part, q)} ~ {_where(splits.train, t)} ({s:.3f})"
                          + (f" {_snippet(part.texts[q])!r} ~ {_snippet(splits.train.texts[t])!r}" if show_text else "")
                          for q, t, s in found[:SHOW])
        report.lines.append(f"{name}: {len(found)} of {len(part)} texts are near-copies of a training text "
                            f"(cosine >= {threshold:g}): {shown}")
        report.warnings.append(f"{len(found)} {name} texts nearly repeat a training text (leakage: the {name} score "
                               "will be too high); --dedupe near leaves them out")
        report.tables.setdefault("near_duplicates.csv", []).extend(
            {"split": name, "where": _where(part, q), "text": _plain(part.texts[q]), "label": part.labels[q],
             "train_where": _where(splits.train, t), "train_text": _plain(splits.train.texts[t]),
             "train_label": splits.train.labels[t], "similarity": round(s, 4)} for q, t, s in found)


def _overlap_checks(report: QualityReport, splits, name: str, found: list, show_text: bool) -> None:
    """Evaluation rows that repeat part of a training text word for word (overlap.py), besides
    the near-copies: a phrase cut from a training sentence, or the sentence a phrase came from."""
    part = getattr(splits, name)
    report.facts["overlaps"][name] = len(found)
    if not found:
        return
    shown = ", ".join(f"{_where(part, q)} {kind} {_where(splits.train, t)}"
                      + (f" {_snippet(part.texts[q])!r} ~ {_snippet(splits.train.texts[t])!r}" if show_text else "")
                      for q, t, kind in found[:SHOW])
    span, unit = report.facts["overlaps"]["span_words"], report.facts["overlaps"]["span_unit"]
    report.lines.append(f"{name}: {len(found)} of {len(part)} texts repeat part of a training text word for word "
                        f"(inside one{f', or sharing {span} {unit} in a row' if span else ''}): {shown}")
    report.warnings.append(f"{len(found)} {name} texts repeat part of a training text word for word: if they are parts "
                           f"of the same documents, the {name} score will be too high; split by document, or compare "
                           "with a test file from elsewhere (tunesmith auto does)")
    report.tables.setdefault("overlaps.csv", []).extend(
        {"split": name, "where": _where(part, q), "text": _plain(part.texts[q]), "label": part.labels[q],
         "kind": kind, "train_where": _where(splits.train, t), "train_text": _plain(splits.train.texts[t]),
         "train_label": splits.train.labels[t]} for q, t, kind in found)


def _label_checks(report: QualityReport, splits, judgement: tuple, class_ids: np.ndarray, show_text: bool) -> None:
    """Confident learning on `judgement`: (out-of-fold probabilities, judged mask, who judged)."""
    names = splits.labels
    probs, judged, who = judgement
    suspects = label_checks.confident_suspects(probs, class_ids, judged)
    report.suspects = suspects
    agree, kappa = label_checks.agreement(probs, class_ids, judged)
    pairs: dict[tuple[str, str], int] = {}
    for s in suspects:
        key = (names[s.given], names[s.suggested])
        pairs[key] = pairs.get(key, 0) + 1
    report.facts["suspect_labels"] = {"count": len(suspects), "of": len(class_ids), "judge": who,
                                      "probe_accuracy": round(agree, 4), "probe_kappa": round(kappa, 4),
                                      "top_pairs": [{"given": g, "suggested": p, "count": c}
                                                    for (g, p), c in sorted(pairs.items(), key=lambda kv: -kv[1])[:TOP_PAIRS]]}
    if not suspects:
        return
    top_pairs = ", ".join(f"{g!r} -> {p!r} {c}" for (g, p), c in sorted(pairs.items(), key=lambda kv: -kv[1])[:SHOW])
    shown = ", ".join(f"{_where(splits.train, s.row)} {names[s.given]!r} -> {names[s.suggested]!r} ({s.confidence:.2f})"
                      + (f" {_snippet(splits.train.texts[s.row])!r}" if show_text else "") for s in suspects[:SHOW])
    report.lines.append(f"train: {len(suspects)} of {len(class_ids)} labels look wrong to {who} that did not see "
                        f"them (given -> suggested: {top_pairs}); most confident: {shown}")
    if kappa < RELIABLE_KAPPA:
        report.lines.append(f"train: {who.replace('a ', 'the ', 1)} agrees with {agree:.0%} of the training labels out of fold (kappa "
                            f"{kappa:.2f}): too weak to tell label errors from hard rows; review the list before "
                            "dropping anything"
                            + ("; a training run's quality/training_suspect_labels.csv judges better on data like "
                               "this" if kappa < DYNAMICS_BETTER_BELOW_KAPPA and who == "a probe" else ""))
        report.warnings.append(f"{len(suspects)} training labels look wrong to a weak judge (kappa {kappa:.2f}); the list "
                               "is worth a review, but --drop-suspect-labels is not advised on this data")
    else:
        report.warnings.append(f"{len(suspects)} training labels look wrong ({100 * len(suspects) / len(class_ids):.1f}%); "
                               "review them, or --drop-suspect-labels leaves them out")
    report.tables["suspect_labels.csv"] = [_suspect_row(splits.train, s, names) for s in suspects]


def _outlier_checks(report: QualityReport, splits, x: dict, class_ids: np.ndarray, show_text: bool) -> None:
    centres = outliers.centroids(x["train"], class_ids, len(splits.labels))
    cut = outliers.cutoff(outliers.centroid_similarity(x["train"], centres))
    report.facts["outliers"] = {"cutoff": round(cut, 4)}
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        similarity = outliers.centroid_similarity(x[name], centres)
        far = [int(i) for i in np.argsort(similarity) if similarity[i] < cut]
        report.facts["outliers"][name] = len(far)
        if not far:
            continue
        report.lines.append(f"{name}: {len(far)} texts are far from every class (centroid cosine < {cut:.2f}): "
                            f"{_examples(part, far, show_text)}")
        report.tables.setdefault("outliers.csv", []).extend(
            _row(name, part, i, reason=f"far from every class (cosine {similarity[i]:.3f})") for i in far)
    total = sum(v for k, v in report.facts["outliers"].items() if k != "cutoff")
    if total:
        report.warnings.append(f"{total} texts are far from every class: off-topic, or a class the labels lack?")


# ---- images -------------------------------------------------------------------------------

def _image_checks(report: QualityReport, splits) -> None:
    hashed = {name: images.hashes_and_flat(getattr(splits, name).texts) for name in ("train", "val", "test")}
    report.facts["near_duplicate_images"], report.facts["single_colour_images"] = {}, {}
    for name in ("train", "val", "test"):
        part = getattr(splits, name)
        flat = hashed[name][1]
        report.facts["single_colour_images"][name] = len(flat)
        if flat:
            report.lines.append(f"{name}: {len(flat)} images are a single colour ({_examples(part, flat, False)})")
            report.warnings.append(f"{name}: {len(flat)} images are a single colour (blank?)")
            report.tables.setdefault("outliers.csv", []).extend(_row(name, part, i, reason="single colour") for i in flat)
        if name == "train":
            continue
        found = images.near_duplicate_images(hashed["train"][0], hashed[name][0])
        report.near[name] = [(q, t, 1 - bits / 64) for q, t, bits in found]
        report.facts["near_duplicate_images"][name] = len(found)
        if found:
            shown = ", ".join(f"{_where(part, q)} ~ {_where(splits.train, t)}" for q, t, _ in found[:SHOW])
            report.lines.append(f"{name}: {len(found)} images nearly repeat a training image (perceptual hash within "
                                f"{images.NEAR_BITS} bits): {shown}")
            report.warnings.append(f"{len(found)} {name} images nearly repeat a training image (leakage); "
                                   "--dedupe near leaves them out")
            report.tables.setdefault("near_duplicates.csv", []).extend(
                {"split": name, "where": _where(part, q), "label": part.labels[q], "train_where": _where(splits.train, t),
                 "train_label": splits.train.labels[t], "bits_apart": bits} for q, t, bits in found)


# ---- helpers ------------------------------------------------------------------------------

def _class_ids(splits) -> np.ndarray | None:
    index = {label: i for i, label in enumerate(splits.labels)}
    try:
        return np.asarray([index[label] for label in splits.train.labels])
    except (KeyError, TypeError):  # not one class per row (scores, label sets)
        return None


def _where(part, i: int) -> str:
    return part.where[i] if part.where else f"row {i + 1}"


def _plain(value) -> str:
    return " ||| ".join(value) if isinstance(value, tuple) else str(value)


def _snippet(value) -> str:
    s = " ".join(_plain(value).split())
    return s if len(s) <= SNIPPET else s[:SNIPPET - 3] + "..."


def _examples(part, rows: list[int], show_text: bool) -> str:
    shown = ", ".join(_where(part, i) + (f" {_snippet(part.texts[i])!r}" if show_text else "") for i in rows[:SHOW])
    return shown + (", ..." if len(rows) > SHOW else "")


def _suspect_row(part, suspect, names: list[str]) -> dict:
    """A likely label error as the suspect lists write it."""
    return {"where": _where(part, suspect.row), "text": _plain(part.texts[suspect.row]), "label": names[suspect.given],
            "suggested": names[suspect.suggested], "confidence": round(suspect.confidence, 4),
            "label_probability": round(suspect.given_probability, 4)}


def _row(split: str, part, i: int, reason: str) -> dict:
    return {"split": split, "where": _where(part, i), "text": _plain(part.texts[i]), "label": part.labels[i],
            "reason": reason}


# ---- acting on the findings (train --drop-suspect-labels, --dedupe near) -------------------

def leave_out(splits, report: QualityReport, drop_suspects: bool, near: bool) -> list[str]:
    """Remove suspect training labels and near-duplicate evaluation rows from `splits` (in
    place); returns notes saying what was removed, recorded in the run's facts."""
    notes = []
    if drop_suspects and report.suspects:
        gone = {s.row for s in report.suspects}
        splits.train = splits.train.subset([i for i in range(len(splits.train)) if i not in gone])
        notes.append(f"--drop-suspect-labels: left out {len(gone)} training rows whose label looks wrong "
                     "(quality/suspect_labels.csv)")
    report.facts["dropped_suspect_labels"] = len(report.suspects) if drop_suspects else 0
    report.facts["removed_near_duplicates"] = {}
    if near:
        for name in EVAL_SPLITS:
            gone = {q for q, _, _ in report.near.get(name, [])}
            part = getattr(splits, name)
            if gone and len(gone) < len(part):
                setattr(splits, name, part.subset([i for i in range(len(part)) if i not in gone]))
                notes.append(f"--dedupe near: left out {len(gone)} {name} rows that nearly repeat a training text "
                             "(quality/near_duplicates.csv)")
            report.facts["removed_near_duplicates"][name] = len(gone) if len(gone) < len(part) else 0
            if gone and len(gone) >= len(part):
                notes.append(f"--dedupe near: every {name} row nearly repeats a training text; kept them all")
    return notes
