"""prefix, prompt and ptuning: the body stays frozen and learned vectors are put in front of
the input, via PEFT. Only those vectors and the task head train (about 0.1% of a small encoder).

- prompt (Lester et al. 2021, prompt tuning): --prompt-tokens learned embeddings before the
  text's token embeddings;
- ptuning (Liu et al. 2021, P-tuning): the same virtual tokens, produced by a small MLP
  (the reparameterisation trains more stably than raw embeddings);
- prefix (Li & Liang 2021, prefix-tuning): learned keys and values prepended in every
  attention layer, not only at the input.

Nothing can be merged into the base weights, so the run's `model/` holds the base model with
its trained head plus the prompt encoder as a submodule (`tunesmith_prompt.*` in the same
safetensors file) and the PEFT config in `config.json`; `restore_prompt` wraps the model again
when a run is loaded. They are for single-sequence heads (classification, text pairs,
regression, multi-label): a token-level head would have to predict the virtual tokens too.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field

from tunesmith.errors import UserError
from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.peft_common import require_transformer


class PromptSettings(BaseModel):
    """prefix, prompt, ptuning: the learned virtual tokens."""

    prompt_tokens: int = Field(20, gt=0, description="prefix, prompt, ptuning: number of learned virtual tokens.")

KEY = "tunesmith_prompt"


class PromptLearning(MethodDefaults):
    mean_pooling = False  # PEFT's prompt classes wrap transformers' own classifier
    exportable = False  # the virtual tokens live in a PEFT wrapper the exporter does not trace yet
    settings = (PromptSettings,)
    def __init__(self, name: str, default_lr: float):
        self.name, self.default_lr = name, default_lr

    def check(self, cfg, task) -> None:
        if task.peft_task_type != "SEQ_CLS":
            raise UserError(f"--method {self.name}: works on one label or score per text (text-classification, "
                            f"text-pair, regression, multi-label), not {cfg.task}; use lora")
        if task.head_needs_input_ids:
            raise UserError(f"--method {self.name}: {cfg.task}'s head reads the entity markers' token states, which "
                            "learned prompt tokens in front of the input would displace; use lora")

    def peft_config(self, cfg):
        from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType

        common = {"task_type": TaskType.SEQ_CLS, "num_virtual_tokens": cfg.prompt_tokens}
        return {"prompt": PromptTuningConfig, "ptuning": PromptEncoderConfig,
                "prefix": PrefixTuningConfig}[self.name](**common)

    def apply(self, model, cfg, task):
        from peft import get_peft_model

        self.check(cfg, task)
        require_transformer(model, cfg, self.name)
        return accept_prefix(get_peft_model(model, self.peft_config(cfg)))

    def export(self, model, folder: Path):
        from peft.utils import ModulesToSaveWrapper

        base = model.get_base_model()
        for name, module in list(base.named_modules()):  # the trained head back in its place
            if isinstance(module, ModulesToSaveWrapper):
                parent, _, child = name.rpartition(".")
                setattr(base.get_submodule(parent) if parent else base, child, module.modules_to_save["default"])
        base.add_module(KEY, model.prompt_encoder["default"])  # saved beside the weights it steers
        base.config.tunesmith_prompt = json.loads(json.dumps(model.peft_config["default"].to_dict(), default=str))
        return base


def restore_prompt(model, folder: str):
    """A saved prefix/prompt/ptuning run: wrapped again, with its trained prompt encoder."""
    config = json.loads((Path(folder) / "config.json").read_text())
    spec = config.get(KEY)
    if not spec:
        return model
    from peft import PeftConfig, get_peft_model
    from safetensors.torch import load_file

    # (the base is now this folder, wherever the run was trained)
    peft_model = get_peft_model(model, PeftConfig.from_peft_type(**{**spec, "base_model_name_or_path": str(folder)}))
    weights = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        weights.update({k[len(KEY) + 1:]: v for k, v in load_file(str(file)).items() if k.startswith(KEY + ".")})
    encoder = peft_model.prompt_encoder["default"]
    if set(weights) != set(encoder.state_dict()):
        raise UserError(f"{folder}: the prompt encoder's weights are missing or do not match; the run folder is damaged")
    encoder.load_state_dict(weights)
    return accept_prefix(peft_model)


def accept_prefix(peft_model):
    """Let PEFT's prefix-tuning hand its prefix to an encoder on every transformers version.

    PEFT passes the learned keys and values as `past_key_values`, and refuses ("Model does not
    support past key values") unless the backbone's forward signature names that argument.
    transformers 5.24 renamed it `cache` (the old name is still accepted until 5.40), so the
    check fails though the model would take the prefix. A forward that declares the old name
    and passes it on under the new one satisfies the check without changing what runs.
    """
    import inspect

    name = getattr(peft_model, "transformer_backbone_name", None)
    if name is None:
        return peft_model
    backbone = peft_model.base_model.get_submodule(name)
    parameters = inspect.signature(backbone.forward).parameters
    if "past_key_values" in parameters or "cache" not in parameters:
        return peft_model
    original = backbone.forward

    def forward(*args, past_key_values=None, **kwargs):
        return original(*args, cache=past_key_values, **kwargs)

    backbone.forward = forward  # on this instance only; nothing of it is saved
    return peft_model


# A few vectors steer a frozen model: they need rates far above full fine-tuning's.
register_method(PromptLearning("prompt", 1e-2))
register_method(PromptLearning("ptuning", 1e-3))  # the MLP in front trains at the usual adapter rate
register_method(PromptLearning("prefix", 1e-2))
