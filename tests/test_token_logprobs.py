"""The chunked answer loss is the model's own loss, gradients included, without full logits."""

from __future__ import annotations

import pytest
import torch

from tunesmith.data.batching import IGNORE
from tunesmith.tasks.token_logprobs import answer_logprobs, mean_answer_loss


def _batch(vocab: int):
    torch.manual_seed(1)
    input_ids = torch.randint(3, vocab, (3, 12))
    labels = input_ids.clone()
    labels[:, :5] = IGNORE  # the prompt
    labels[2, 9:] = IGNORE  # padding of a shorter row
    mask = torch.ones_like(input_ids)
    mask[2, 9:] = 0
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_chunked_loss_and_gradients_equal_the_models_own(tiny_causal_lm, method):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, dtype=torch.float32)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    batch = _batch(model.config.vocab_size)

    expected = model(**batch).loss
    expected.backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    got = mean_answer_loss(model, batch)
    got.backward()
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    for name, grad in want.items():
        assert torch.allclose(dict(model.named_parameters())[name].grad, grad, atol=1e-5), name


def test_chunks_of_any_size_give_the_same_per_row_sums(tiny_causal_lm):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm, dtype=torch.float32)
    batch = _batch(model.config.vocab_size)
    with torch.no_grad():
        whole, counts = answer_logprobs(model, **batch, chunk=10**6)
        pieces, _ = answer_logprobs(model, **batch, chunk=3)
    assert counts.tolist() == [7, 7, 4]  # labels 5..11 (row 2: 5..8), each predicted from the position before
    assert torch.allclose(whole, pieces, atol=1e-5)
    assert (whole < 0).all()
