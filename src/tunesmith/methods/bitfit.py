"""bitfit: only the bias terms of the pretrained body train, with the task head (Ben Zaken et
al. 2022): about 0.1% of a BERT's parameters, often within a point or two of full tuning on
small data, and the tuned model is the base model plus a small set of changed vectors."""

from tunesmith.errors import UserError
from tunesmith.methods import MethodDefaults, register_method
from tunesmith.methods.layers import body_of


class BitFit(MethodDefaults):
    name = "bitfit"
    tunes_own_weights = True
    default_lr = 1e-3  # biases are few and start pretrained; the paper tunes them at 1e-4..1e-3

    def apply(self, model, cfg, task):
        body = body_of(model)
        body_params = {id(p) for p in body.parameters()}
        biases = 0
        for name, p in model.named_parameters():
            is_bias = name.endswith(".bias")
            p.requires_grad_(id(p) not in body_params or is_bias)  # the head trains in full
            biases += is_bias and id(p) in body_params
        if not biases:
            raise UserError(f"--method bitfit: {cfg.resolved_model()} has no bias terms in its body "
                            "(e.g. Llama-style models); use lora or ia3")
        return model

    def export(self, model, folder):
        return model


register_method(BitFit())
