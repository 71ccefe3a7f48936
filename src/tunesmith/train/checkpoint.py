"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint folder holds only what training changes (the trainable weights, the optimizer
moments, the schedule, the RNG and the loop position), so a LoRA checkpoint is a few MB.
It is written to a temporary folder and moved into place whole: a crash leaves either the
previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunesmith.io import atomic_dir


def trainable_state(model) -> dict[str, torch.Tensor]:
    state = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().cpu().contiguous() for n, b in running_statistics(model).items()})
    return state


def running_statistics(model) -> dict[str, torch.Tensor]:
    """Buffers that training changes without a gradient: batch-norm running means and
    variances (image backbones). Transformers have none; their checkpoints stay as small."""
    return {n: b for n, b in model.named_buffers()
            if n.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}


def save(folder: Path, model, optimizer=None, scheduler=None, state: dict | None = None) -> None:
    with atomic_dir(folder) as tmp:
        _write(tmp, model, optimizer, scheduler, state)


def _write(tmp: Path, model, optimizer, scheduler, state: dict | None) -> None:
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    meta: dict = {"state": state or {}}
    if optimizer is not None:
        tensors, meta["optimizer"] = _split_optimizer(optimizer.state_dict())
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    if scheduler is not None:
        meta["scheduler"] = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
        save_file(rng, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta, indent=1))


def find(folder: Path) -> Path | None:
    """The checkpoint at `folder`, or the previous one if a crash hit mid-replacement."""
    for candidate in (folder, folder.with_name(folder.name + ".old")):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load_weights(folder: Path, model) -> None:
    weights = load_file(str(folder / "trainable.safetensors"))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
    if missing:
        raise RuntimeError(f"{folder}: checkpoint lacks {len(missing)} trainable tensors (first: {missing[0]})")
    params = {**dict(model.named_parameters()), **running_statistics(model)}
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)


def average_weights(folders: list[Path], model) -> None:
    """Load the arithmetic mean of several checkpoints' weights (checkpoint averaging: the
    last k evaluations of one run, Izmailov et al. 2018 in spirit); counters from the last."""
    states = [load_file(str(f / "trainable.safetensors")) for f in folders]
    mean = {k: torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else states[-1][k]
            for k, v in states[0].items()}
    params = {**dict(model.named_parameters()), **running_statistics(model)}
    with torch.no_grad():
        for name, tensor in mean.items():
            params[name].copy_(tensor)


def load(folder: Path, model, optimizer, scheduler) -> dict:
    """Restore everything `save` wrote; returns the loop state."""
    load_weights(folder, model)
    meta = json.loads((folder / "state.json").read_text())
    optimizer.load_state_dict(_join_optimizer(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"]))
    scheduler.load_state_dict({**meta["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return meta["state"]


def read_state(folder: Path) -> dict:
    return json.loads((folder / "state.json").read_text())["state"]


def _split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for flat, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = flat.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}
