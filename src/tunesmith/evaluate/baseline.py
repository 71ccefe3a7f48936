"""The untuned baseline: the pretrained encoder, frozen, with only a linear head fitted.

Mean-pooled last hidden states feed a logistic regression (scikit-learn). Printed beside
the fine-tuned model, it shows what fine-tuning itself bought on this data.
"""

from __future__ import annotations

import numpy as np
import torch

from tunesmith.data.batching import collate, inference_batches

MAX_FIT_EXAMPLES = 5000  # a linear probe saturates long before this; caps the forward passes


def embed(encoder, token_ids: list[list[int]], pad_id: int, batch_size: int = 64) -> np.ndarray:
    encoder.eval()
    out = np.zeros((len(token_ids), encoder.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for indices in inference_batches([len(t) for t in token_ids], batch_size):
            batch = collate([token_ids[i] for i in indices], pad_id)
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[indices] = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).numpy()
    return out


def linear_probe(encoder, train_ids, train_y, test_ids, test_y, labels, pad_id, metrics_fn, seed: int = 0) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    if len(train_ids) > MAX_FIT_EXAMPLES:
        keep = np.sort(rng.choice(len(train_ids), MAX_FIT_EXAMPLES, replace=False))
        train_ids = [train_ids[i] for i in keep]
        train_y = [train_y[i] for i in keep]
    scaler = StandardScaler()
    x_train = scaler.fit_transform(embed(encoder, train_ids, pad_id))
    x_test = scaler.transform(embed(encoder, test_ids, pad_id))
    probe = LogisticRegression(max_iter=2000)
    probe.fit(x_train, train_y)
    # Classes the probe never saw (possible only on tiny data) get probability zero.
    probs = np.zeros((len(test_ids), len(labels)))
    probs[:, probe.classes_] = probe.predict_proba(x_test)
    result = metrics_fn(test_y, probs, labels)
    result["fit_examples"] = len(train_ids)
    return result
