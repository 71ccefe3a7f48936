"""Where a pretrained body keeps its transformer blocks, for methods and optimisers that treat
layers differently (freeze's unfreeze_top_k, layer-wise learning-rate decay)."""

from __future__ import annotations

import re

import torch

LAYER_INDEX = re.compile(r"\.(?:layer|layers|h|blocks|block)\.(\d+)\.")


def body_of(model):
    """The pretrained body: Hugging Face models keep it under `base_model_prefix` ("bert",
    "model", ...); a model without one (a plain module) is all body."""
    prefix = getattr(model, "base_model_prefix", "")
    return getattr(model, prefix, model) if prefix else model


def blocks(body) -> torch.nn.ModuleList | None:
    """The longest ModuleList of the body: its stack of transformer blocks."""
    lists = [m for m in body.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    return max(lists, key=len) if lists else None


def layer_index(name: str) -> int | None:
    """The block number in a parameter name (`bert.encoder.layer.3.attention...` -> 3)."""
    found = LAYER_INDEX.search("." + name)
    return int(found.group(1)) if found else None
