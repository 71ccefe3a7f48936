"""What the PEFT-based methods share: the LoRA family's settings, and how they find a
model's head and check its backbone. Methods import it; none imports another method."""

from typing import Optional

from pydantic import BaseModel, Field

HEADS = ["classifier", "score", "qa_outputs"]  # the head names PEFT's task types train in full


class LoraSettings(BaseModel):
    """lora, adalora, qlora: the low-rank update."""

    lora_r: int = Field(8, gt=0, description="LoRA rank.")
    lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_targets: Optional[list[str]] = Field(
        None, description="Module names LoRA adapts (default: chosen per architecture)."
    )
    lora_rslora: bool = Field(False, description="LoRA: rank-stabilised scaling alpha / sqrt(r) (rsLoRA).")
    lora_dora: bool = Field(False, description="LoRA: weight-decomposed adapters (DoRA): a learned magnitude per output.")


def require_transformer(model, cfg, method: str) -> None:
    from transformers import PreTrainedModel

    from tunesmith.errors import UserError
    from tunesmith.methods.layers import body_of

    if not isinstance(body_of(model), PreTrainedModel):
        raise UserError(f"--method {method}: needs a transformer backbone; {cfg.resolved_model()} is not one "
                        "(use full, freeze or bitfit, or a Hugging Face model such as a ViT)")


def peft_task_type(model, task) -> str | None:
    """PEFT's task type for a transformers model of `task`; None for a model of our own around a
    transformers body (tasks/mean_pool.py), whose head then trains in full by name (HEADS)."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return None
    # The text-to-text tasks tune decoder-only and encoder-decoder models: the model says which.
    return "SEQ_2_SEQ_LM" if getattr(model.config, "is_encoder_decoder", False) else task.peft_task_type


def present(model, names: list[str]) -> list[str] | None:
    """The names among `names` that the model has (PEFT warns about absent ones)."""
    found = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [n for n in names if n in found] or None
