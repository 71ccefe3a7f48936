"""adalora: LoRA whose rank budget moves to the layers that need it (Zhang et al. 2023,
"AdaLoRA"), via PEFT. Each adapted layer starts at rank 1.5 * --lora-r, written as P·diag(E)·Q;
during training the singular values E of least importance (|weight x gradient|, smoothed) are
pruned until the average rank is --lora-r. Same targets, head and run layout as `lora`.

The pruning schedule needs the length of training, which only the loop knows: `on_step` fills
it in at the first step (warm up on the first 10% of steps, prune until 80%, then keep the
final ranks fixed) and then calls PEFT's `update_and_allocate` after every optimizer step."""

from pathlib import Path

import torch

from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.peft_common import HEADS, LoraSettings, peft_task_type, present, require_transformer


class AdaLora(MethodDefaults):
    name = "adalora"
    settings = (LoraSettings,)
    default_lr = 5e-4  # as lora: the paper uses 5e-4..1e-3 on GLUE

    def apply(self, model, cfg, task):
        from peft import AdaLoraConfig, TaskType, get_peft_model

        require_transformer(model, cfg, self.name)
        task_type = peft_task_type(model, task)
        config = AdaLoraConfig(
            task_type=TaskType[task_type] if task_type else None,
            modules_to_save=None if task_type else HEADS,
            init_r=max(1, round(1.5 * cfg.lora_r)),  # the starting budget the pruning cuts down
            target_r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.lora_targets or "all-linear",
            exclude_modules=None if cfg.lora_targets else present(model, HEADS),
            total_step=1_000_000,  # replaced by the real number of steps in on_step
        )
        return get_peft_model(model, config)

    def on_step(self, model, step: int, total_steps: int) -> None:
        config = model.peft_config["default"]
        if step == 0 or config.total_step != total_steps:  # (a resumed run also passes here)
            config.total_step = total_steps
            config.tinit = total_steps // 10
            config.tfinal = total_steps // 5
            config.deltaT = max(1, total_steps // 50)  # ~40 reallocations over the pruning phase
        # An adapted layer the forward never reached (a pooler under a mean-pooled head) has no
        # gradient, and PEFT's importance score (|weight x gradient|) fails on None: its
        # importance is zero, so it is pruned first.
        for name, parameter in model.named_parameters():
            if "lora_" in name and parameter.requires_grad and parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
        model.base_model.update_and_allocate(step)

    def export(self, model, folder: Path):
        model.save_pretrained(str(folder / "adapter"))
        return model.merge_and_unload()


register_method(AdaLora())
