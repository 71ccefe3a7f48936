"""full: every weight trains. The strongest and the most memory-hungry."""

from tunesmith.methods import MethodDefaults, register_method


class Full(MethodDefaults):
    name = "full"
    tunes_own_weights = True
    default_lr = 5e-5  # BERT's fine-tuning range is 2e-5..5e-5; small encoders like the top of it

    def apply(self, model, cfg, task):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def export(self, model, folder):
        return model


register_method(Full())
