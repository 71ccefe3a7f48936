"""A replayable market-sentiment stream from the tweets that ship offline (tweets-sentiment):
timestamps over two days, and one hour in which negative tweets about Apple surge.

    python examples/monitor/make_stream.py --out stream.jsonl
    tunesmith monitor --sentiment runs/RUN --source stream.jsonl --keywords examples/monitor/keywords.yaml \\
        --rules examples/monitor/rules.yaml --alerts alerts.jsonl --report monitor.html

The background is a seeded sample of the tweets spread evenly over 48 hours (the data set has
no times of its own). The surge is `--surge` negative Apple tweets (by the data set's own
labels) put into hour 40; apart from those, Apple tweets are rare in the background, so the
surge stands far above its baseline. The monitor scores texts with its sentiment run, never
with these labels: the alert fires only if the model reads the tweets as negative.
"""

from __future__ import annotations

import argparse
import json
import random

START = 1_767_225_600  # 2026-01-01 00:00 UTC
APPLE = ("$aapl", "apple", "iphone", "ipad", "macbook", "itunes")


def main() -> None:
    from tunesmith.data.builtin import tweets_sentiment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="stream.jsonl")
    parser.add_argument("--background", type=int, default=4000, help="tweets spread over the two days")
    parser.add_argument("--surge", type=int, default=60, help="negative Apple tweets in hour 40")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    frame = tweets_sentiment().frame
    rows = list(zip(frame["text"], frame["label"]))
    apple_negative = [i for i, (t, y) in enumerate(rows) if y == "negative" and any(w in t.lower() for w in APPLE)]
    surge = rng.sample(apple_negative, min(args.surge, len(apple_negative)))
    rest = [i for i in range(len(rows)) if i not in set(surge)]
    background = rng.sample(rest, args.background)
    stream = [(START + k * 48 * 3600 / len(background), i) for k, i in enumerate(background)]
    stream += [(START + 40 * 3600 + k * 3600 / len(surge), i) for k, i in enumerate(surge)]
    stream.sort()
    with open(args.out, "w", encoding="utf-8") as f:
        for moment, i in stream:
            f.write(json.dumps({"id": f"tweet-{i}", "time": round(moment, 1), "text": rows[i][0]}) + "\n")
    print(f"wrote {args.out}: {len(stream):,} tweets over 48 hours, {len(surge)} negative Apple tweets in hour 40")


if __name__ == "__main__":
    main()
