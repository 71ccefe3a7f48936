"""ChnSentiCorp (or English SST-2) with the English default (MiniLM) and the multilingual e5-small:
how much of the text each tokenizer reads, and the untuned baseline (a linear probe on frozen
mean-pooled features) on the official dev set, on all of it and on the dev texts not in the
training file.

    python bench/chinese.py [--max-length 128]
    python bench/chinese.py --data sst2 --train-samples 10000    # which model for English text
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tunesmith import models
from tunesmith.data.checks import unknown_share
from tunesmith.data.sources import read_source
from tunesmith.data.tokens import tokenize
from tunesmith.evaluate.baseline import embed, fit_scaler

DATASETS = Path(__file__).resolve().parent.parent.parent / "shared" / "datasets"
TEXT_COLUMN = {"chnsenticorp": "text_a", "sst2": "sentence"}


def load(data: str, name: str) -> tuple[list[str], np.ndarray]:
    frame = read_source(str(DATASETS / data / name), "utf-8")["all"].frame
    return [str(t) for t in frame[TEXT_COLUMN[data]]], frame["label"].to_numpy()


def main() -> None:
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--data", choices=sorted(TEXT_COLUMN), default="chnsenticorp")
    parser.add_argument("--train-samples", type=int, default=None, help="a seeded sample of the training file")
    args = parser.parse_args()
    train_x, train_y = load(args.data, "train.tsv")
    if args.train_samples and args.train_samples < len(train_x):
        keep = np.random.default_rng(0).choice(len(train_x), args.train_samples, replace=False)
        train_x, train_y = [train_x[i] for i in keep], train_y[keep]
    dev_x, dev_y = load(args.data, "dev.tsv")
    unseen = np.array([t not in set(train_x) for t in dev_x])
    print(f"train {len(train_x):,}, dev {len(dev_x):,} ({unseen.sum()} not in the training file)\n")
    print("| model | [UNK] share of train tokens | probe dev accuracy (all) | probe dev accuracy (unseen) |")
    print("|---|---|---|---|")
    for name in ("minilm", "e5-small"):
        source = models.resolve(name)
        tokenizer, encoder = models.load_tokenizer(source), AutoModel.from_pretrained(source)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        train_ids = tokenize(tokenizer, train_x, args.max_length)
        dev_ids = tokenize(tokenizer, dev_x, args.max_length)
        scaler = fit_scaler(features := embed(encoder, train_ids, pad))
        probe = LogisticRegression(max_iter=2000).fit(scaler.transform(features), train_y)
        predicted = probe.predict(scaler.transform(embed(encoder, dev_ids, pad)))
        print(f"| {name} | {100 * unknown_share(tokenizer, train_ids):.1f}% | {(predicted == dev_y).mean():.4f} | "
              f"{(predicted[unseen] == dev_y[unseen]).mean():.4f} |")


if __name__ == "__main__":
    main()
