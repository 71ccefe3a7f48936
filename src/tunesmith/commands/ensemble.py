"""`tunesmith ensemble RUN1 RUN2 ... --name NAME [--vote]`: several runs answering as one.

The ensemble averages the members' outputs (class probabilities, scores), or with `--vote`
takes the majority label. It is a run folder like any other: the members' models are copied
into `members/` (so it keeps working when the member runs are moved or deleted), with the
shared splits, `ensemble.json`, and metrics and report from the shared test split; `eval`,
`predict` and `serve` load it through `tunesmith.ensemble.EnsemblePredictor`.
"""

from __future__ import annotations

import shutil

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.commands.evaluate import EvalArgs, evaluate
from tunesmith.commands.members import compatible_runs, start_combined_run
from tunesmith.errors import UserError
from tunesmith.io import replace_dir, write_json
from tunesmith.runs import Run
from tunesmith.tasks import TASKS, supporting

class EnsembleArgs(BaseModel):
    """`tunesmith ensemble RUN1 RUN2 ... --name NAME`."""

    runs: list[str] = Field(description="finished run folders (same task, labels and splits)", json_schema_extra=positional())
    name: str = Field(description="name of the new run folder")
    output: str = Field("runs", description="folder for the new run")
    vote: bool = Field(False, description="majority vote of labels instead of mean probabilities")


def ensemble(args: EnsembleArgs, out=print) -> Run:
    run_paths, vote = args.runs, args.vote
    target = combine(compatible_runs(run_paths, "ensemble"), args.name, args.output, vote)
    out(f"combined {len(run_paths)} runs into {target.path} ({'majority vote' if vote else 'mean of outputs'})")
    evaluate(EvalArgs(run=str(target.path)), out=out)
    return target


def combine(runs: list[Run], name: str, output: str, vote: bool = False) -> Run:
    """The ensemble run folder of `runs` (already checked by `compatible_runs`), not yet scored:
    `tunesmith auto` scores its ensemble rung on validation and the test split only if kept."""
    cfg = runs[0].settings()
    task = TASKS[cfg.task]
    if not task.ensemble:
        raise UserError(f"ensemble: {cfg.task} runs cannot be combined (combinable: {', '.join(supporting('ensemble'))})")
    if vote and "vote" not in task.ensemble:
        raise UserError(f"ensemble --vote: for single-label classifiers; {cfg.task} outputs are averaged")
    target, tmp = start_combined_run(runs[0], name, output)
    members = []
    for i, run in enumerate(runs):
        folder = tmp / "members" / str(i)
        shutil.copytree(run.model_dir, folder / "model")
        shutil.copy2(run.config_file, folder / "config.yaml")
        shutil.copy2(run.labels_file, folder / "labels.json")
        members.append(f"members/{i}")
    write_json(tmp / "ensemble.json", {"combine": "vote" if vote else "mean", "members": members,
                                       "from": [str(r.path) for r in runs]})
    replace_dir(tmp, target.path)
    return target
