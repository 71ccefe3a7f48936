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


def load_splits(cfg, target=None, pairs: bool | None = False) -> Splits:
    """The train/val/test splits a run's settings `cfg` name (its data fields and seed).
    `target` parses the label cells (one class by default); `pairs`: True needs two text
    columns, None takes a second one when --text-pair-col is given or a known name is present."""
    target = target or ClassTarget()
    if cfg.label_sep is not None:
        target = target.with_separator(cfg.label_sep)
    if not cfg.data:
        raise UserError("no training data: pass --data FILE (or set 'data:' in the config)")
    tables = read_source(cfg.data, cfg.encoding)
    train_table = tables.get("train", tables.get("all"))
    if train_table is None:
        raise UserError(f"--data {cfg.data!r}: has no 'train' split (splits: {', '.join(tables)})")
    columns = _columns(train_table, cfg, pairs)

    def examples_from(table: Table) -> Examples:
        for column, flag in zip(columns, ("--text-col", "--label-col", "--text-pair-col")):
            if column is not None:
                pick_column(table, column, (), "text", flag)
        return to_examples(table, columns[0], columns[1], target, columns[2])

    notes: list[str] = []
    train = examples_from(train_table)
    val = examples_from(read_source(cfg.val_data, cfg.encoding)["all"]) if cfg.val_data else \
        _split_table(tables, "val", examples_from)
    test = examples_from(read_source(cfg.test_data, cfg.encoding)["all"]) if cfg.test_data else \
        _split_table(tables, "test", examples_from)
    if val is None or test is None:
        train, val, test = _carve(train, val, test, cfg, target, notes)
    labels = target.names(train.labels, train_table.source, columns[1])
    for name, split in (("validation", val), ("test", test)):
        unseen = target.unseen(split.labels, labels)
        if unseen:
            shown = ", ".join(repr(u) for u in unseen[:5])
            raise UserError(f"{split.source}: {name} labels never seen in training: {shown}; "
                            "add training examples for them or remove those rows")
    train, val, test = _sampled((train, val, test), cfg, target, notes)
    return Splits(train, val, test, labels, columns[0], columns[1], notes, pair_col=columns[2])


def _columns(train_table: Table, cfg, pairs: bool | None) -> tuple[str, str, str | None]:
    """The text, label and second-text columns: given, else detected by name."""
    pair_col = pair_column(train_table, cfg.text_pair_col, pairs)
    text_col = pick_column(train_table, cfg.text_col, PAIR_FIRST_COLUMNS if pair_col else TEXT_COLUMNS, "text",
                           "--text-col")
    label_col = pick_column(train_table, cfg.label_col, LABEL_COLUMNS, "labels", "--label-col")
    if len({text_col, label_col, pair_col or text_col}) < (3 if pair_col else 2):
        raise UserError(f"{train_table.source}: the text, pair and label columns must differ; pass --text-col, "
                        "--text-pair-col and --label-col")
    return text_col, label_col, pair_col


def _carve(train: Examples, val, test, cfg, target, notes: list[str]):
    """The missing validation or test split carved out of training, after removing exact
    duplicate texts so that no text can be both trained on and tested on."""
    missing = [name for name, split in (("val", val), ("test", test)) if split is None]
    train, removed = dedupe(train)
    if removed:
        notes.append(f"removed {removed} exact duplicate texts before splitting")
    fractions = [cfg.val_fraction if name == "val" else cfg.test_fraction for name in missing]
    groups = stratified_indices(target.strata(train.labels), fractions, cfg.seed)
    carved = {name: train.subset(groups[k]) for k, name in enumerate(missing)}
    train = train.subset(groups[-1])
    val, test = carved.get("val", val), carved.get("test", test)
    sizes = "/".join(f"{name} {len(split)}" for name, split in (("train", train), ("val", val), ("test", test)))
    notes.append(f"split {cfg.data} {sizes} (stratified, seed {cfg.seed})")
    return train, val, test


def _sampled(splits: tuple, cfg, target, notes: list[str]) -> tuple:
    """The splits cut to --max-train-samples / --max-eval-samples (stratified); none may be empty."""
    sizes = tuple(len(split) for split in splits)
    limits = (cfg.max_train_samples, cfg.max_eval_samples, cfg.max_eval_samples)
    train, val, test = (sample(split, limit, cfg.seed, target.strata) for split, limit in zip(splits, limits))
    if (len(train), len(val), len(test)) != sizes:
        notes.append(f"sampled train {len(train)}/val {len(val)}/test {len(test)} (max_train_samples, max_eval_samples)")
    for name, split in (("train", train), ("validation", val), ("test", test)):
        if len(split) == 0:
            flag = "val" if name == "validation" else name
            raise UserError(f"{cfg.data}: the {name} split is empty; add data or give --{flag}-data")
    return train, val, test


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
