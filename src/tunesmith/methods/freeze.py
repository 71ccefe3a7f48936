"""freeze: the pretrained encoder stays fixed; only the task head trains (a linear probe)."""

from tunesmith.methods import register_method


class Freeze:
    name = "freeze"
    default_lr = 1e-3  # a randomly initialised head alone tolerates (and needs) a large step

    def apply(self, model, cfg):
        # Hugging Face models keep the pretrained body under `base_model_prefix` ("bert",
        # "roberta", ...); everything outside it is the freshly initialised head.
        body = getattr(model, model.base_model_prefix)
        for p in model.parameters():
            p.requires_grad_(True)
        for p in body.parameters():
            p.requires_grad_(False)
        return model

    def export(self, model, folder):
        return model


register_method(Freeze())
