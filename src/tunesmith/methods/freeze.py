"""freeze: the pretrained body stays fixed; the task head trains, and with `unfreeze_top_k`
the top k transformer blocks too (the layers nearest the head adapt most to a new task)."""

from pydantic import BaseModel, Field

from tunesmith.errors import UserError
from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.layers import blocks, body_of


class FreezeSettings(BaseModel):
    """freeze: how much of the body trains beside the head."""

    unfreeze_top_k: int = Field(0, ge=0, description="freeze: also train the top k transformer layers.")


class Freeze(MethodDefaults):
    name = "freeze"
    settings = (FreezeSettings,)
    tunes_own_weights = True
    default_lr = 1e-3  # a randomly initialised head alone tolerates (and needs) a large step
    relative_cost = 1.0  # the body runs forward only; the head's backward is negligible

    def search_space(self, lr: float) -> dict:
        return {**super().search_space(lr), "unfreeze_top_k": [0, 1, 2]}

    def apply(self, model, cfg, task):
        body = body_of(model)
        for p in model.parameters():
            p.requires_grad_(True)
        for p in body.parameters():
            p.requires_grad_(False)
        k = cfg.unfreeze_top_k
        if k:
            stack = blocks(body)
            if stack is None:
                raise UserError(f"--unfreeze-top-k {k}: {cfg.resolved_model()} has no stack of layers to unfreeze")
            if k > len(stack):
                raise UserError(f"--unfreeze-top-k {k}: the model has only {len(stack)} layers")
            for block in list(stack)[-k:]:
                for p in block.parameters():
                    p.requires_grad_(True)
        if not any(p.requires_grad for p in model.parameters()):
            # A language model's head is pretrained (often tied to the embeddings): there is no
            # new head, so freezing the body leaves nothing to learn.
            raise UserError(f"--method freeze: {cfg.resolved_model()} has no new head to train for {cfg.task}; "
                            "add --unfreeze-top-k K, or use lora")
        return model

    def export(self, model, folder):
        return model


register_method(Freeze())
