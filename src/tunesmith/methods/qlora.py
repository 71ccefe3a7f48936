"""qlora: LoRA adapters on a base model held in 4-bit NF4 (Dettmers et al. 2023), for causal
LMs on a CUDA GPU with bitsandbytes. The base is reloaded quantised; only the adapters train.

On a machine without CUDA or without bitsandbytes, `check` refuses the run before anything
is written, and says to use `lora` (the same adapters on an fp32 base).
"""

from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.methods.peft_common import LoraSettings
from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.lora import Lora


class QLora(MethodDefaults):
    name = "qlora"
    settings = (LoraSettings,)
    tasks = ("causal-lm", "preference", "rl")
    default_lr = 2e-4  # the QLoRA paper's rate for small models

    def check(self, cfg, task) -> None:
        import importlib.util

        import torch

        if not torch.cuda.is_available():
            raise UserError("--method qlora: needs a CUDA GPU (bitsandbytes 4-bit weights); this machine has none. "
                            "Use --method lora: the same adapters on a full-precision base")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("--method qlora: needs the pip package bitsandbytes (pip install bitsandbytes)")

    def apply(self, model, cfg, task):
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        self.check(cfg, task)
        source = model.name_or_path
        del model  # the fp32 copy is replaced by the 4-bit one
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16)
        quantized = AutoModelForCausalLM.from_pretrained(source, quantization_config=quantization, device_map={"": 0})
        quantized.config.use_cache = False
        return Lora().apply(prepare_model_for_kbit_training(quantized), cfg, task)

    def export(self, model, folder: Path):
        """The adapter as trained, and a merged model on the base reloaded in bf16 (merging into
        4-bit weights would round the update away)."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        model.save_pretrained(str(folder / "adapter"))
        base = AutoModelForCausalLM.from_pretrained(model.base_model.model.name_or_path, dtype=torch.bfloat16)
        return PeftModel.from_pretrained(base, str(folder / "adapter")).merge_and_unload()


register_method(QLora())
