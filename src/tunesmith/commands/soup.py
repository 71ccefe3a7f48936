"""`tunesmith soup RUN1 RUN2 ... --name NAME`: a uniform model soup (Wortsman et al. 2022).

The weights of several runs fine-tuned from the same base model on the same splits (other
seeds, learning rates or epochs) are averaged into one model; its cost at inference is one
model's, and it often scores at least as well as the best of its members. The soup is a new,
normal run folder (the members' config and splits, the averaged model), scored on the shared
held-out test split: `eval`, `predict` and `serve` take it like any run.
"""

from __future__ import annotations

import shutil

import torch
from safetensors.torch import load_file, save_file

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.commands.evaluate import EvalArgs, evaluate
from tunesmith.errors import UserError
from tunesmith.commands.members import compatible_runs, start_combined_run
from tunesmith.io import replace_dir, write_json
from tunesmith.runs import Run

WEIGHTS = "model.safetensors"


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The arithmetic mean of floating-point tensors; other tensors (counters, ids) from the first."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


class SoupArgs(BaseModel):
    """`tunesmith soup RUN1 RUN2 ... --name NAME`."""

    runs: list[str] = Field(description="finished run folders (same task, base model and splits)", json_schema_extra=positional())
    name: str = Field(description="name of the new run folder")
    output: str = Field("runs", description="folder for the new run")


def soup(args: SoupArgs, out=print) -> Run:
    run_paths, name, output = args.runs, args.name, args.output
    runs = compatible_runs(run_paths, "soup")
    first = runs[0]
    # Every weights file averages: model.safetensors, and a head kept beside it (a mean-pooled
    # classifier's classifier.safetensors, a few-shot run's embedding head).
    names = sorted(f.name for f in first.model_dir.glob("*.safetensors"))
    if WEIGHTS not in names:
        raise UserError(f"soup: {first.model_dir / WEIGHTS} not found (a soup needs one safetensors file per run)")
    averaged = {}
    for file_name in names:
        files = [run.model_dir / file_name for run in runs]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise UserError(f"soup: {missing[0]} not found; the runs' models are not the same kind")
        states = [load_file(str(f)) for f in files]
        for run, state in zip(runs[1:], states[1:]):
            if state.keys() != states[0].keys() or any(state[k].shape != states[0][k].shape for k in state):
                raise UserError(f"soup: {run.path}'s model does not have the same weights as {first.path}'s")
        averaged[file_name] = average_state_dicts(states)

    target, tmp = start_combined_run(first, name, output)
    shutil.copytree(first.model_dir, tmp / "model")
    for file_name, state in averaged.items():
        save_file(state, str(tmp / "model" / file_name), metadata={"format": "pt"})
    write_json(tmp / "soup.json", {"members": [str(r.path) for r in runs], "kind": "uniform weight average"})
    replace_dir(tmp, target.path)
    out(f"averaged {len(runs)} runs into {target.path}")
    evaluate(EvalArgs(run=str(target.path)), out=out)
    return target
