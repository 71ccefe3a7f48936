"""The untuned baseline: the pretrained encoder, frozen, with only a linear head fitted.

Mean-pooled last hidden states feed a logistic regression (scikit-learn). Printed beside
the fine-tuned model, it shows what fine-tuning itself bought on this data.
"""

from __future__ import annotations

import numpy as np
import torch

from tunesmith.data.batching import collate, inference_batches

MAX_FIT_EXAMPLES = 5000  # a linear probe saturates long before this; caps the forward passes


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's hidden states over the tokens its mask keeps: the features the
    probe reads, and the ones a mean-pooled head (tasks/mean_pool.py) reads after it."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def embed(encoder, token_ids: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    encoder.eval()
    out = np.zeros((len(token_ids), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for indices in inference_batches([len(t) for t in token_ids], batch_size):
            batch = collate([token_ids[i] for i in indices], pad_id)
            out[indices] = masked_mean(encoder(**batch).last_hidden_state, batch["attention_mask"]).numpy()
    return out


_LAST_FIT: dict = {}  # the last probe fitted: the baseline's is reused by a head that starts from it


def fit_probe(encoder, train_ids, train_y, pad_id, seed: int = 0):
    """A logistic regression on the standardised mean-pooled features of (at most
    MAX_FIT_EXAMPLES of) the training texts: (scaler, probe). Asked twice for the same
    weights and rows (the baseline, then `start_head`), it embeds them once."""
    with torch.no_grad():
        weights = sum(float(p.double().sum()) for p in encoder.parameters())
    key = (weights, pad_id, seed, tuple(map(tuple, train_ids)), tuple(train_y))
    if key not in _LAST_FIT:
        _LAST_FIT.clear()
        _LAST_FIT[key] = _fit_probe(encoder, train_ids, train_y, pad_id, seed)
    return _LAST_FIT[key]


def _fit_probe(encoder, train_ids, train_y, pad_id, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    if len(train_ids) > MAX_FIT_EXAMPLES:
        keep = np.sort(rng.choice(len(train_ids), MAX_FIT_EXAMPLES, replace=False))
        train_ids = [train_ids[i] for i in keep]
        train_y = [train_y[i] for i in keep]
    scaler = StandardScaler()
    x_train = scaler.fit_transform(embed(encoder, train_ids, pad_id))
    probe = LogisticRegression(max_iter=2000)
    probe.fit(x_train, train_y)
    return scaler, probe


def linear_probe(encoder, train_ids, train_y, test_ids, test_y, labels, pad_id, metrics_fn, seed: int = 0) -> dict:
    scaler, probe = fit_probe(encoder, train_ids, train_y, pad_id, seed)
    x_test = scaler.transform(embed(encoder, test_ids, pad_id))
    # Classes the probe never saw (possible only on tiny data) get probability zero.
    probs = np.zeros((len(test_ids), len(labels)))
    probs[:, probe.classes_] = probe.predict_proba(x_test)
    result = metrics_fn(test_y, probs, labels)
    result["fit_examples"] = min(len(train_ids), MAX_FIT_EXAMPLES)
    return result


def probe_as_linear_layer(probe, num_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """The probe's weights and biases, one row per class, on the standardised features. A
    binary probe's single row is the second class's logit against zero for the first; a class
    the probe never saw gets a row that never wins."""
    coef, intercept = probe.coef_, probe.intercept_
    if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    weight = np.zeros((num_labels, coef.shape[1]))
    bias = np.full(num_labels, -1e4)
    weight[probe.classes_] = coef
    bias[probe.classes_] = intercept
    return weight, bias
