"""Which rung the current `auto` rule keeps, replayed from a finished ladder's auto.json: the
recorded rungs (their validation metric, the validation rows) go through `Ladder.best`
unchanged, so a change to the choice (such as the ensemble's one-standard-error margin) can be
checked on a ladder that took an hour and a half to climb without climbing it again.

    python bench/ladder_choice.py runs/auto-sst2/auto.json

Prints each finished rung with its validation metric, the one the ladder recorded as kept,
and the one the code of this checkout keeps. Neither is scored on the test split here: run
`tunesmith eval <run> <test file>` for that.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tunesmith.search.ladder import Data, Ladder, Outcome, Rung, parse_target
from tunesmith.tasks import TASKS


def replay(summary: dict) -> Ladder:
    """A ladder holding the recorded outcomes (nothing is trained: `run` is never called)."""
    outcomes = [Outcome(Rung(r["rung"], r["rung"], ensemble=r["rung"] == "ensemble",
                             tune=r["rung"].startswith("tune ")),
                        r["status"], seconds=r["seconds"], value=r["val"], run=r["run"])
                for r in summary["rungs"]]
    metric = summary["metric"]
    higher_better = next(t.metrics_higher_is_better[metric] for t in TASKS.values()
                         if metric in t.metrics_higher_is_better)
    target = parse_target(summary["target"], {metric: higher_better}) if summary["target"] else None
    data = Data(train=0, val=summary["validation"]["rows"], labels=0, named_labels=False, epochs=0)
    ladder = Ladder([], metric, data, 0.0, None, target, higher_better, lambda rung, left: None, lambda: 0.0)
    ladder.outcomes = outcomes
    return ladder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("auto_json", type=Path, help="a finished ladder's auto.json")
    summary = json.loads(parser.parse_args().auto_json.read_text(encoding="utf-8"))
    ladder = replay(summary)
    for o in ladder.outcomes:
        if o.status == "done":
            print(f"{o.rung.name:<12} val {summary['metric']} {o.value:.4f}")
    recorded = next(o.rung.name for o in ladder.outcomes if o.run == summary["winner"])
    print(f"kept when recorded: {recorded}; kept by this checkout's rule: {ladder.best().rung.name} "
          f"(on {summary['validation']['rows']:,} validation rows)")


if __name__ == "__main__":
    main()
