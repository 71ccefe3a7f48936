"""A recommendation set from BBC News articles that ship offline (bbc-news): readers described
by the headlines they read, candidate articles, and whether they clicked.

    python examples/recommend/make_pairs.py --out-dir rec
    tunesmith train --task text-pair-classification --data rec/train.csv --test-data rec/test.csv \\
        --text-col profile --text-pair-col item --label-col clicked --method full --epochs 2 --name rec
    tunesmith eval runs/rec rec/test.csv --rank

A reader likes one or two of the five topics (business, entertainment, politics, sport, tech);
their profile is the headlines of three articles from those topics. Each reader sees ten
candidate articles (a headline and the first lines) from all topics and clicks those of a
topic they like. Clicks are a rule here, not behaviour: what the set tests is whether a model
can match a profile to items from their text, as a recommender must for new items. Readers
are split between training and test (different people); candidate articles come from one pool,
so popularity (how often an article was clicked in training) is a fair baseline. Profiles use
articles that are never candidates.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path


def main() -> None:
    from tunesmith.data.builtin import bbc_news

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="rec")
    parser.add_argument("--train-readers", type=int, default=300)
    parser.add_argument("--test-readers", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    frame = bbc_news().frame
    articles = [(str(text), str(topic)) for text, topic in zip(frame["text"], frame["label"])]
    rng.shuffle(articles)
    half = len(articles) // 2
    profile_pool, candidate_pool = articles[:half], articles[half:]
    topics = sorted({t for _, t in articles})

    def headline(text: str) -> str:
        return " ".join(text.split()[:12])

    def item(text: str) -> str:
        return " ".join(text.split()[:60])

    def readers(count: int) -> list[dict]:
        rows = []
        for _ in range(count):
            liked = set(rng.sample(topics, rng.choice([1, 2])))
            read = rng.sample([a for a in profile_pool if a[1] in liked], 3)
            profile = "reads: " + " | ".join(headline(t) for t, _ in read)
            for text, topic in rng.sample(candidate_pool, args.candidates):
                rows.append({"profile": profile, "item": item(text), "clicked": int(topic in liked)})
        return rows

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, count in (("train", args.train_readers), ("test", args.test_readers)):
        rows = readers(count)
        with open(out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["profile", "item", "clicked"])
            writer.writeheader()
            writer.writerows(rows)
        clicks = sum(r["clicked"] for r in rows)
        print(f"wrote {out / name}.csv: {count} readers, {len(rows)} rows, {clicks} clicks")


if __name__ == "__main__":
    main()
