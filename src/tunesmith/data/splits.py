"""Assemble train / val / test examples from the config, with every error caught up front.

Nothing is written and no model is loaded until this succeeds, so bad input never leaves
a run folder behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunesmith.data.labeled import (LABEL_COLUMNS, PAIR_FIRST_COLUMNS, PAIR_SECOND_COLUMNS, TEXT_COLUMNS, Examples,
                                    pick_column, to_examples)
from tunesmith.data.sources import Table, read_source
from tunesmith.data.split import dedupe, sample, stratified_indices
from tunesmith.data.targets import ClassTarget
from tunesmith.errors import UserError


@dataclass
class Splits:
    train: Examples
    val: Examples
    test: Examples
    labels: list[str]  # label names; position = class id
    text_col: str
    label_col: str
    notes: list[str] = field(default_factory=list)  # what was done to the data, for the log
    warnings: list[str] = field(default_factory=list)  # problems found (and repaired) while reading
    pair_col: str | None = None  # the second text column, for pair tasks


def load_splits(
    data: str | None,
    val_data: str | None = None,
    test_data: str | None = None,
    text_col: str | None = None,
    label_col: str | None = None,
    encoding: str = "utf-8",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    target=None,
    text_pair_col: str | None = None,
    pairs: bool | None = False,
    label_sep: str | None = None,
) -> Splits:
    """`target` parses the label cells (one class by default); `pairs`: True needs two text
    columns, None takes a second one when --text-pair-col is given or a known name is present."""
    target = target or ClassTarget()
    if label_sep is not None:
        target = target.with_separator(label_sep)
    if not data:
        raise UserError("no training data: pass --data FILE (or set 'data:' in the config)")
    tables = read_source(data, encoding)
    train_table = tables.get("train", tables.get("all"))
    if train_table is None:
        raise UserError(f"--data {data!r}: has no 'train' split (splits: {', '.join(tables)})")
    pair_col = pair_column(train_table, text_pair_col, pairs)
    text_col = pick_column(train_table, text_col, PAIR_FIRST_COLUMNS if pair_col else TEXT_COLUMNS, "text", "--text-col")
    label_col = pick_column(train_table, label_col, LABEL_COLUMNS, "labels", "--label-col")
    if len({text_col, label_col, pair_col or text_col}) < (3 if pair_col else 2):
        raise UserError(f"{train_table.source}: the text, pair and label columns must differ; pass --text-col, "
                        "--text-pair-col and --label-col")

    def examples_from(table: Table) -> Examples:
        for column, flag in ((text_col, "--text-col"), (label_col, "--label-col"), (pair_col, "--text-pair-col")):
            if column is not None:
                pick_column(table, column, (), "text", flag)
        return to_examples(table, text_col, label_col, target, pair_col)

    notes: list[str] = []
    train = examples_from(train_table)
    val = examples_from(read_source(val_data, encoding)["all"]) if val_data else _split_table(tables, "val", examples_from)
    test = examples_from(read_source(test_data, encoding)["all"]) if test_data else _split_table(tables, "test", examples_from)

    # Carve whatever split is missing out of the training data, after removing exact
    # duplicate texts so that no text can be both trained on and tested on.
    missing = [name for name, split in (("val", val), ("test", test)) if split is None]
    if missing:
        train, removed = dedupe(train)
        if removed:
            notes.append(f"removed {removed} exact duplicate texts before splitting")
        fractions = [val_fraction if name == "val" else test_fraction for name in missing]
        groups = stratified_indices(target.strata(train.labels), fractions, seed)
        carved = {name: train.subset(groups[k]) for k, name in enumerate(missing)}
        train = train.subset(groups[-1])
        val = carved.get("val", val)
        test = carved.get("test", test)
        notes.append(
            "split " + data + " " + "/".join(
                f"{name} {len(split)}" for name, split in (("train", train), ("val", val), ("test", test))
            ) + f" (stratified, seed {seed})"
        )

    labels = target.names(train.labels, train_table.source, label_col)
    for name, split in (("validation", val), ("test", test)):
        unseen = target.unseen(split.labels, labels)
        if unseen:
            shown = ", ".join(repr(u) for u in unseen[:5])
            raise UserError(
                f"{split.source}: {name} labels never seen in training: {shown}; "
                "add training examples for them or remove those rows"
            )

    sizes = (len(train), len(val), len(test))
    train = sample(train, max_train_samples, seed, target.strata)
    val = sample(val, max_eval_samples, seed, target.strata)
    test = sample(test, max_eval_samples, seed, target.strata)
    if (len(train), len(val), len(test)) != sizes:
        notes.append(f"sampled train {len(train)}/val {len(val)}/test {len(test)} (max_train_samples, max_eval_samples)")
    for name, split in (("train", train), ("validation", val), ("test", test)):
        if len(split) == 0:
            raise UserError(f"{data}: the {name} split is empty; add data or give --{'val' if name == 'validation' else name}-data")
    return Splits(train, val, test, labels, text_col, label_col, notes, pair_col=pair_col)


def pair_column(table: Table, given: str | None, pairs: bool | None) -> str | None:
    if given is not None:
        return pick_column(table, given, (), "second text", "--text-pair-col")
    if pairs is False:
        return None
    columns = {str(c).lower(): c for c in table.frame.columns}
    found = next((columns[name] for name in PAIR_SECOND_COLUMNS if name in columns), None)
    if found is None and pairs:
        raise UserError(f"{table.source}: cannot tell which column holds the second text of each pair; columns are: "
                        f"{', '.join(map(str, table.frame.columns))}; pass --text-pair-col NAME")
    return found


def _split_table(tables: dict[str, Table], key: str, convert) -> Examples | None:
    return convert(tables[key]) if key in tables else None
