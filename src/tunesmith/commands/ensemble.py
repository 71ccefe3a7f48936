"""`tunesmith ensemble RUN1 RUN2 ... --name NAME [--vote]`: several runs answering as one.

The ensemble averages the members' outputs (class probabilities, scores), or with `--vote`
takes the majority label. It is a run folder like any other: the members' models are copied
into `members/` (so it keeps working when the member runs are moved or deleted), with the
shared splits, `ensemble.json`, and metrics and report from the shared test split; `eval`,
`predict` and `serve` load it through `EnsemblePredictor`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np

from tunesmith.commands.evaluate import evaluate
from tunesmith.commands.members import compatible_runs, start_combined_run
from tunesmith.errors import UserError
from tunesmith.io import read_json, replace_dir, write_json
from tunesmith.runs import Run

COMBINABLE = ("text-classification", "text-pair-classification", "image-classification", "regression",
              "multi-label-classification")
VOTABLE = ("text-classification", "text-pair-classification", "image-classification")


def ensemble(run_paths: list[str], name: str, output: str = "runs", vote: bool = False, out=print) -> Run:
    runs = compatible_runs(run_paths, "ensemble")
    cfg = runs[0].config()
    if cfg["task"] not in COMBINABLE:
        raise UserError(f"ensemble: {cfg['task']} runs cannot be combined (combinable: {', '.join(COMBINABLE)})")
    if vote and cfg["task"] not in VOTABLE:
        raise UserError(f"ensemble --vote: for single-label classifiers; {cfg['task']} outputs are averaged")
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
    out(f"combined {len(runs)} runs into {target.path} ({'majority vote' if vote else 'mean of outputs'})")
    evaluate(str(target.path), out=out)
    return target


def is_ensemble(run: Run) -> bool:
    return (run.path / "ensemble.json").is_file()


@dataclass
class EnsemblePredictor:
    """Member predictors behind the Predictor interface (`predict`, `labels`, `task`)."""

    members: list
    combine: str
    labels: list[str]
    task: object
    max_length: int

    @classmethod
    def from_run(cls, run: Run) -> "EnsemblePredictor":
        from tunesmith.inference import Predictor

        spec = read_json(run.path / "ensemble.json")
        members = [Predictor.from_run(Run(run.path / m)) for m in spec["members"]]
        return cls(members, spec["combine"], run.labels(), task=members[0].task, max_length=members[0].max_length)

    @property
    def model(self):
        return self.members[0].model

    @property
    def tokenizer(self):
        return self.members[0].tokenizer

    def predict(self, inputs: list, batch_size: int = 32) -> np.ndarray:
        outputs = np.stack([np.asarray(m.predict(inputs, batch_size)) for m in self.members])
        if self.combine == "vote":
            # Each member's label as a one-hot vote; ties go to the higher mean probability.
            votes = np.eye(outputs.shape[-1])[outputs.argmax(-1)].mean(0)
            return votes + 1e-6 * outputs.mean(0)
        return outputs.mean(0)
