"""ia3: learned vectors that rescale keys, values and feed-forward activations (Liu et al.
2022, "(IA)^3"), via PEFT: fewer trainable parameters than LoRA (a vector, not two matrices,
per adapted layer). The target layers are PEFT's per-architecture defaults. Like LoRA, the run
keeps the adapter in `adapter/` and a merged plain model in `model/`."""

from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.peft_common import HEADS, peft_task_type, present, require_transformer


class IA3(MethodDefaults):
    name = "ia3"
    default_lr = 3e-3  # the paper's rate: scaling vectors start at 1 and move slowly

    def apply(self, model, cfg, task):
        from peft import IA3Config, TaskType, get_peft_model

        require_transformer(model, cfg, self.name)
        task_type = peft_task_type(model, task)
        config = IA3Config(task_type=TaskType[task_type] if task_type else None,
                           modules_to_save=None if task_type else present(model, HEADS))
        try:
            return get_peft_model(model, config)
        except ValueError as exc:
            if "target_modules" not in str(exc):
                raise
            raise UserError(f"--method ia3: PEFT has no IA3 target layers for {model.config.model_type} models; "
                            "use lora") from None

    def export(self, model, folder: Path):
        model.save_pretrained(str(folder / "adapter"))
        return model.merge_and_unload()


register_method(IA3())
