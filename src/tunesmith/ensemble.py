"""An ensemble run answering as one: its members' predictors, their outputs averaged (or
voted). `tunesmith ensemble` (commands/ensemble.py) makes the run folder; `Predictor.from_run`
loads it through `EnsemblePredictor`, so `eval`, `predict` and `serve` need nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tunesmith.io import inside, read_json
from tunesmith.runs import Run


def is_ensemble(run: Run) -> bool:
    return (run.path / "ensemble.json").is_file()


def member_folder(run: Run, name: str):
    """A member's folder inside the ensemble run (its `members/`); an ensemble.json naming one
    elsewhere (../another-run, an absolute path, a symlink out) is refused: a run folder from
    someone else must not make tunesmith load models from other places."""
    from tunesmith.errors import UserError

    folder = run.path / str(name)
    if not inside(run.path, folder):
        raise UserError(f"{run.path / 'ensemble.json'}: member {name!r} is not inside the ensemble's folder; "
                        "an ensemble keeps its members under members/ (make it again with `tunesmith ensemble`)")
    return folder


@dataclass
class EnsemblePredictor:
    """Member predictors behind the Predictor interface (`predict`, `labels`, `task`)."""

    members: list
    combine: str
    labels: list[str]
    task: object
    max_length: int

    @classmethod
    def from_run(cls, run: Run, load_member) -> "EnsemblePredictor":
        """`load_member(Run)`: a member's predictor (`Predictor.from_run`, which loads this)."""
        spec = read_json(run.path / "ensemble.json")
        members = [load_member(Run(member_folder(run, m))) for m in spec["members"]]
        return cls(members, spec["combine"], run.labels(), task=members[0].task, max_length=members[0].max_length)

    @property
    def model(self):
        return self.members[0].model

    @property
    def tokenizer(self):
        return self.members[0].tokenizer

    def predict(self, inputs: list, batch_size: int = 32):
        return combine_outputs([m.predict(inputs, batch_size) for m in self.members], self.combine)


def combine_outputs(answers: list, how: str = "mean"):
    """The members' outputs for the same inputs as one: their mean, or with "vote" each
    member's label as a one-hot vote (ties go to the higher mean probability)."""
    if not isinstance(answers[0], np.ndarray):  # outputs with decision settings of their own
        return type(answers[0]).mean(answers)  # (multi-label: probabilities and thresholds)
    outputs = np.stack(answers)
    if how == "vote":
        votes = np.eye(outputs.shape[-1])[outputs.argmax(-1)].mean(0)
        return votes + 1e-6 * outputs.mean(0)
    return outputs.mean(0)
