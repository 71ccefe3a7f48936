"""Smaller models cut from a run's model: fewer layers, narrower feed-forward blocks.

`distill` keeps some of the teacher's layers (`keep_layers`) and `prune` removes the least
important feed-forward neurons (`prune_ffn`) or whole layers (`drop_layers`); then both train
the smaller model against the original (compress/distill.py). Every cut keeps the shapes
uniform across layers, so the result is still a plain transformers model: its config.json says
how many layers and neurons it has, and `AutoModel` loads it with no tunesmith code.

Which architectures: BERT-style encoders (BERT, RoBERTa, XLM-R, ELECTRA, MiniLM), whose layers
sit in one `nn.ModuleList` and whose feed-forward block is `intermediate.dense` then
`output.dense`. Others are refused with one line before any work.
"""

from __future__ import annotations

import copy

import torch

from tunesmith.errors import UserError


def layer_list(model) -> torch.nn.ModuleList:
    """The encoder's layers: the ModuleList as long as the config's num_hidden_layers."""
    count = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count:
            return module
    raise UserError(f"{type(model).__name__}: no list of {count} encoder layers found; only BERT-style encoders "
                    "(BERT, RoBERTa, XLM-R, MiniLM) can be cut into a smaller model")


def _replace_layers(model, keep: list[int]) -> None:
    layers = layer_list(model)
    kept = torch.nn.ModuleList([layers[i] for i in keep])
    for parent in model.modules():  # swap the list where it hangs (encoder.layer, transformer.layer, ...)
        for name, child in parent.named_children():
            if child is layers:
                setattr(parent, name, kept)
    model.config.num_hidden_layers = len(keep)  # a mean-pooled head shares its body's config object


def spread_layers(total: int, keep: int) -> list[int]:
    """`keep` of `total` layers, evenly spread and always including the last (its outputs are
    what the head was trained on): 6 -> 3 keeps layers 1, 3, 5 (0-based)."""
    if not 1 <= keep <= total:
        raise UserError(f"--student-layers {keep}: choose between 1 and the model's {total} layers")
    return [round((i + 1) * total / keep) - 1 for i in range(keep)]


def keep_layers(model, count: int):
    """A copy of `model` with `count` of its layers (spread_layers), head included."""
    student = copy.deepcopy(model)
    _replace_layers(student, spread_layers(len(layer_list(model)), count))
    return student


def feed_forward(layer) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """A BERT-style layer's feed-forward block: (into the wide layer, back to the hidden size)."""
    inner = getattr(getattr(layer, "intermediate", None), "dense", None)
    outer = getattr(getattr(layer, "output", None), "dense", None)
    if not isinstance(inner, torch.nn.Linear) or not isinstance(outer, torch.nn.Linear):
        raise UserError(f"{type(layer).__name__}: no intermediate.dense / output.dense feed-forward block; only "
                        "BERT-style encoders can be pruned")
    return inner, outer


def neuron_importance(model, batches) -> list[torch.Tensor]:
    """Per layer, each feed-forward neuron's importance: its mean absolute activation over the
    batches, times the norm of the weights that carry it back (how much it moves the output)."""
    layers = layer_list(model)
    sums = [torch.zeros(feed_forward(layer)[0].out_features) for layer in layers]
    hooks = []
    for i, layer in enumerate(layers):
        def record(_module, _inputs, output, i=i):
            sums[i] += output.detach().abs().flatten(0, -2).sum(0).float().cpu()
        hooks.append(layer.intermediate.register_forward_hook(record))  # after the activation function
    try:
        _run(model, batches)
    finally:
        for hook in hooks:
            hook.remove()
    return [total * feed_forward(layer)[1].weight.detach().norm(dim=0).float().cpu()
            for total, layer in zip(sums, layers)]


def prune_ffn(model, sparsity: float, batches) -> int:
    """Remove `sparsity` of every layer's feed-forward neurons, the least important
    (`neuron_importance`) first, the same count in every layer; returns the width kept."""
    if not 0 < sparsity < 1:
        raise UserError(f"--sparsity {sparsity}: give the share of feed-forward neurons to remove, above 0 and below 1")
    importance = neuron_importance(model, batches)
    width = feed_forward(layer_list(model)[0])[0].out_features
    kept_width = max(1, round(width * (1 - sparsity)))
    for layer, score in zip(layer_list(model), importance):
        keep = torch.sort(torch.topk(score, kept_width).indices).values
        inner, outer = feed_forward(layer)
        layer.intermediate.dense = _rows(inner, keep)
        layer.output.dense = _columns(outer, keep)
    model.config.intermediate_size = kept_width
    return kept_width


def layer_influence(model, batches) -> list[float]:
    """Per layer, how much it changes the hidden states: 1 - cosine(input, output), averaged
    over real tokens (a layer that barely turns its input contributes little)."""
    layers = layer_list(model)
    totals, counts = [0.0] * len(layers), [0] * len(layers)
    hooks = []
    for i, layer in enumerate(layers):
        def record(_module, inputs, output, i=i):
            hidden_in = inputs[0]
            hidden_out = output[0] if isinstance(output, tuple) else output
            change = 1 - torch.nn.functional.cosine_similarity(hidden_in, hidden_out, dim=-1)
            totals[i] += float(change.sum())
            counts[i] += change.numel()
        hooks.append(layer.register_forward_hook(record))
    try:
        _run(model, batches)
    finally:
        for hook in hooks:
            hook.remove()
    return [t / max(c, 1) for t, c in zip(totals, counts)]


def drop_layers(model, count: int, batches) -> list[int]:
    """Remove the `count` layers of least influence (`layer_influence`); returns those kept."""
    total = len(layer_list(model))
    if not 0 <= count < total:
        raise UserError(f"--drop-layers {count}: the model has {total} layers; drop between 0 and {total - 1}")
    if count == 0:
        return list(range(total))
    influence = layer_influence(model, batches)
    keep = sorted(sorted(range(total), key=lambda i: -influence[i])[: total - count])
    _replace_layers(model, keep)
    return keep


def _rows(linear: torch.nn.Linear, keep: torch.Tensor) -> torch.nn.Linear:
    new = torch.nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias[keep])
    return new


def _columns(linear: torch.nn.Linear, keep: torch.Tensor) -> torch.nn.Linear:
    new = torch.nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, keep])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def _run(model, batches) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        model.train(was_training)
