"""Adversarial training on the embedding layer: FGM (Miyato et al. 2017) and PGD (Madry et al.
2018), as used to make text classifiers robust to small input changes.

Both perturb the output of the input-embedding layer (not its weights, so it works when the
embeddings are frozen, as under LoRA or freeze) in the direction that raises the loss, and
train on the clean loss plus the loss under the perturbation:

- FGM: one step, r = epsilon * g / ||g||, g the gradient of the loss at the embeddings.
- PGD: `steps` steps of size epsilon / steps along the normalised gradient, each projected back
  onto the ball ||r|| <= epsilon.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def _embedding_hook(model, perturbation: list):
    """While active, the embedding output is made differentiable, kept in `perturbation[0]`'s
    slot "seen", and has `perturbation[0]["r"]` (if set) added to it."""
    state = perturbation[0]

    def hook(module, inputs, output):
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        if state.get("r") is not None:
            output = output + state["r"]
        state["seen"] = output
        return output

    handle = model.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def adversarial_loss(base_loss, kind: str, epsilon: float, steps: int = 3):
    """A `compute_loss(model, batch)` that adds the loss under an FGM/PGD perturbation to
    `base_loss(model, batch) -> (loss, extras)`."""

    def unit(g: torch.Tensor) -> torch.Tensor:
        norm = g.norm()
        return g / norm if norm > 0 and torch.isfinite(norm) else torch.zeros_like(g)

    def compute_loss(model, batch):
        state: dict = {}
        with _embedding_hook(model, [state]):
            clean, extras = base_loss(model, batch)
            embedded = state["seen"]
            (grad,) = torch.autograd.grad(clean, embedded, retain_graph=True)
            if kind == "fgm":
                state["r"] = epsilon * unit(grad).detach()
            else:  # pgd
                r = torch.zeros_like(embedded)
                for _ in range(steps):
                    r = r + (epsilon / steps) * unit(grad)
                    norm = r.norm()
                    if norm > epsilon:
                        r = r * (epsilon / norm)
                    state["r"] = r.detach()
                    step_loss, _ = base_loss(model, batch)
                    (grad,) = torch.autograd.grad(step_loss, state["seen"])
                    r = r.detach()
            adversarial, _ = base_loss(model, batch)
        return clean + adversarial, {**extras, "perturbation_norm": float(state["r"].norm())}

    return compute_loss


def model_loss(model, batch):
    return model(**batch).loss, {}
