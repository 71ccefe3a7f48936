"""adapter: bottleneck adapters inside each transformer block (Houlsby et al. 2019), written
here because PEFT has none and the `adapters` library replaces the model classes.

An adapter is down-projection -> GELU -> up-projection, added to a sub-layer's output before
its residual connection and layer norm: h <- h + up(gelu(down(h))). The up-projection starts
at zero, so the adapted model starts exactly as the pretrained one. Layouts:

- houlsby: after the attention output and after the feed-forward output, layer norms train too;
- pfeiffer (Pfeiffer et al. 2021): after the feed-forward output only; about half the parameters.

Adapters are submodules of the layer they follow (`...output.dense.adapter.down.weight`), so
the base weights keep their names; the saved config carries `tunesmith_adapter`, and
`restore_adapters` puts them back when a run's model is loaded (plain transformers would drop them).
"""

from __future__ import annotations

import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from typing import Literal

from pydantic import BaseModel, Field

from tunesmith.errors import UserError
from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.layers import body_of


class AdapterSettings(BaseModel):
    """adapter: the bottleneck adapters inserted in each layer."""

    adapter_layout: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="adapter: after attention and feed-forward (houlsby) or after feed-forward only (pfeiffer).")
    adapter_size: int = Field(64, gt=0, description="adapter: bottleneck width.")

# (after attention, after feed-forward) output projections, by module-name suffix.
POINTS = [("attention.output.dense", "output.dense"),  # BERT, RoBERTa, MiniLM, ELECTRA
          ("attention.out_lin", "ffn.lin2"),  # DistilBERT
          ("self_attn.o_proj", "mlp.down_proj")]  # Llama, Qwen, Mistral


class Bottleneck(torch.nn.Module):
    def __init__(self, width: int, size: int):
        super().__init__()
        self.down = torch.nn.Linear(width, size)
        self.up = torch.nn.Linear(size, width)
        torch.nn.init.zeros_(self.up.weight)  # the identity at the start: nothing pretrained is disturbed
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


def _add_adapter_output(module, inputs, output):
    return module.adapter(output)


def adapter_points(model, layout: str) -> list[tuple[str, torch.nn.Linear]]:
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        for attention, feed_forward in POINTS:
            if name.endswith(attention):
                if layout == "houlsby":
                    found.append((name, module))
                break
            if name.endswith(feed_forward):  # (an attention output ended the loop above)
                found.append((name, module))
                break
    return found


def insert_adapters(model, layout: str, size: int) -> int:
    points = adapter_points(model, layout)
    for _, linear in points:
        linear.add_module("adapter", Bottleneck(linear.out_features, size))
        linear.register_forward_hook(_add_adapter_output)
    model.config.tunesmith_adapter = {"layout": layout, "size": size}
    return len(points)


def saved_adapters(folder: str) -> dict | None:
    """A run folder's adapter layout and size (config.json's `tunesmith_adapter`), None for a
    model tuned without adapters."""
    path = Path(folder) / "config.json"
    return json.loads(path.read_text(encoding="utf-8")).get("tunesmith_adapter") if path.is_file() else None


class _OnlyAdapterKeys(logging.Filter):
    """Drops transformers' LOAD REPORT when every key it lists is an adapter's, UNEXPECTED to
    plain transformers and put back by `restore_adapters` right after; a report naming any
    other key (a missing body weight: a damaged folder) still reaches the user."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if "LOAD REPORT" not in text:
            return True
        rows = [line for line in text.splitlines() if "|" in line and ("." in line.split("|")[0])]
        return not rows or not all(".adapter." in row and "UNEXPECTED" in row for row in rows)


@contextmanager
def adapter_keys_expected(folder: str):
    """While loading a saved adapter run, keep transformers from reporting its adapter weights
    as unexpected (a Python user saw a 12-line table on every load; the CLI hides all of it)."""
    if not saved_adapters(folder):
        yield
        return
    logger, only_adapters = logging.getLogger("transformers.modeling_utils"), _OnlyAdapterKeys()
    logger.addFilter(only_adapters)
    try:
        yield
    finally:
        logger.removeFilter(only_adapters)


def restore_adapters(model, folder: str):
    """A saved adapter run: the adapters back in place, with their trained weights."""
    spec = saved_adapters(folder)
    if not spec:
        return model
    from safetensors.torch import load_file

    insert_adapters(model, spec["layout"], spec["size"])
    weights = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        weights.update({k: v for k, v in load_file(str(file)).items() if ".adapter." in k})
    # A transformers model saves its body under its prefix ("bert.encoder..."); a mean-pooled
    # classifier saves the body alone ("encoder..."): load into whichever holds the names.
    holder = model if set(weights) & set(model.state_dict()) else body_of(model)
    missing = holder.load_state_dict(weights, strict=False)
    absent = [k for k in missing.missing_keys if ".adapter." in k]
    if absent:
        raise UserError(f"{folder}: adapter weights missing ({absent[0]}); the run folder is damaged")
    return model


class Adapter(MethodDefaults):
    name = "adapter"
    settings = (AdapterSettings,)
    default_lr = 1e-3  # adapters start at the identity and are small: the papers use 1e-4..1e-3
    relative_cost = 2.2  # the backward still runs through every layer, but few weights get gradients

    def search_space(self, lr: float) -> dict:
        return {**super().search_space(lr), "adapter_size": [16, 32, 64, 128]}

    def apply(self, model, cfg, task):
        for p in model.parameters():
            p.requires_grad_(False)
        count = insert_adapters(body_of(model), cfg.adapter_layout, cfg.adapter_size)
        if not count:
            raise UserError(f"--method adapter: no attention/feed-forward outputs found in {cfg.resolved_model()} "
                            "(known: BERT-style, DistilBERT, Llama-style); use lora")
        model.config.tunesmith_adapter = {"layout": cfg.adapter_layout, "size": cfg.adapter_size}
        body_ids = {id(p) for p in body_of(model).parameters()}
        for name, p in model.named_parameters():
            # BERT's pooler (dense + tanh on [CLS]) feeds only the head: it trains with it.
            head = id(p) not in body_ids or ".pooler." in name
            norm = cfg.adapter_layout == "houlsby" and "norm" in name.lower()
            if head or ".adapter." in name or norm:
                p.requires_grad_(True)
        return model

    def export(self, model, folder):
        return model  # saved with its adapters; restore_adapters loads them back


register_method(Adapter())
