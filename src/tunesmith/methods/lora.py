"""lora: low-rank adapters beside every linear layer of the encoder (Hu et al. 2021), via PEFT.

The base weights stay frozen; the head trains in full. The run keeps the adapter in
`adapter/` and a merged copy (W + B·A·scale folded into W) in `model/`, which loads in
plain `transformers` with no PEFT and runs as fast as the base model.
"""

from pathlib import Path

from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.peft_common import HEADS, LoraSettings, peft_task_type, present, require_transformer


# LoRA's learning rate by the run's length (where the task allows it: Task.lr_by_steps). Short
# runs need a large step for B, which starts at zero, to move at all; long runs at that step
# overshoot. So the rate stays at SHORT_RUN_LR up to SHORT_RUN_STEPS, then halves each time the
# steps double, reaching the 5e-4 default at 4,000 steps (docs/benchmarks.md, "LoRA's learning
# rate and the run's length", has the runs that chose these numbers).
SHORT_RUN_LR, SHORT_RUN_STEPS = 2e-3, 1000


class Lora(MethodDefaults):
    name = "lora"
    settings = (LoraSettings,)
    default_lr = 5e-4  # long runs; shorter ones get more (lr_for_steps): B starts at 0 and needs ~10x full's rate
    relative_cost = 2.2  # as adapter: a backward through every layer, few weight gradients

    def search_space(self, lr: float) -> dict:
        return {**super().search_space(lr), "lora_r": [4, 8, 16, 32]}

    def lr_for_steps(self, steps: int) -> float:
        falling = SHORT_RUN_LR * SHORT_RUN_STEPS / max(1, steps)
        return max(self.default_lr, min(SHORT_RUN_LR, falling))

    def apply(self, model, cfg, task):
        from peft import LoraConfig, TaskType, get_peft_model

        require_transformer(model, cfg, self.name)
        task_type = peft_task_type(model, task)
        config = LoraConfig(
            # The task type keeps the task head trainable; tasks PEFT has no type for name it.
            task_type=TaskType[task_type] if task_type else None,
            modules_to_save=None if task_type else HEADS,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            # "all-linear": every linear layer except the output head, for any architecture;
            # adapting only query/value (the paper's choice) costs ~1-2 points here.
            target_modules=cfg.lora_targets or "all-linear",
            # The task head trains in full (modules_to_save); it must not also get an adapter,
            # which "all-linear" would give a token-classification head.
            exclude_modules=None if cfg.lora_targets else present(model, HEADS),
            # rsLoRA (Kalajievsky 2023): scale by alpha / sqrt(r), not alpha / r, so higher ranks
            # keep learning; DoRA (Liu et al. 2024): a learned magnitude per output beside the
            # low-rank direction update.
            use_rslora=cfg.lora_rslora,
            use_dora=cfg.lora_dora,
        )
        return get_peft_model(model, config)

    def export(self, model, folder: Path):
        model.save_pretrained(str(folder / "adapter"))
        return model.merge_and_unload()


register_method(Lora())
