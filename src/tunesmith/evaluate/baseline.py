"""The untuned baseline: the pretrained encoder, frozen, with only a linear head fitted.

Mean-pooled last hidden states, standardised, feed a linear model (scikit-learn): logistic
regression for labels, one per label for label sets, ridge regression for scores. Printed
beside the fine-tuned model, it shows what fine-tuning itself bought on this data; a
mean-pooled head starts as it (`start_head`).
"""

from __future__ import annotations

import numpy as np
import torch

from tunesmith.data.batching import collate, inference_batches

MAX_FIT_EXAMPLES = 5000  # a linear probe saturates long before this; caps the forward passes
DEAD_SCALE = 1e-6  # a feature whose spread is below this share of the median spread is constant


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of each row's hidden states over the tokens its mask keeps: the features the
    probe reads, and the ones a mean-pooled head (tasks/mean_pool.py) reads after it."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def mean_pool(hidden: torch.Tensor, batch: dict) -> torch.Tensor:
    return masked_mean(hidden, batch["attention_mask"])


def embed(encoder, token_ids: list[list[int]], pad_id: int, batch_size: int = 64, pool=mean_pool) -> np.ndarray:
    """One feature row per text: `pool(last hidden states, batch)`, the masked mean unless a
    head reads other positions (relation extraction's entity markers)."""
    encoder.eval()
    out = None
    with torch.inference_mode():
        for indices in inference_batches([len(t) for t in token_ids], batch_size):
            batch = collate([token_ids[i] for i in indices], pad_id)
            features = pool(encoder(**batch).last_hidden_state, batch).numpy()
            if out is None:
                out = np.zeros((len(token_ids), features.shape[1]), dtype=np.float32)
            out[indices] = features
    return out if out is not None else np.zeros((0, encoder.config.hidden_size), dtype=np.float32)


_LAST: dict = {}  # the last features and fits: the baseline's are reused by a head that starts from them


def _memo(kind: str, key: tuple, compute):
    """The last result of each kind for its key (the baseline, then `start_head`, ask for the
    same fit on the same weights and rows: it is computed once)."""
    if _LAST.get(kind, (None,))[0] != key:
        _LAST[kind] = (key, compute())
    return _LAST[kind][1]


def fit_scaler(raw: np.ndarray):
    """A StandardScaler fitted on `raw` features, except that a dimension that is constant up
    to float rounding (MiniLM's mean-pooled features have one with a spread of 5e-33) keeps a
    scale of 1, as scikit-learn does for exact constants: blown up to unit variance, its
    rounding noise would become a feature, and a mean-pooled head's gradient through the body
    infinite (gradient clipping then zeroes every update)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(raw)
    scaler.scale_[scaler.scale_ < DEAD_SCALE * np.median(scaler.scale_)] = 1.0
    return scaler


def probe_features(encoder, train_ids, pad_id, seed: int = 0, pool=mean_pool):
    """(scaler, standardised mean-pooled features, row indices, key) of at most
    MAX_FIT_EXAMPLES training texts (a seeded sample when there are more); `key` names these
    weights and rows, for memoising what is fitted on them."""
    with torch.no_grad():
        weights = sum(float(p.double().sum()) for p in encoder.parameters())
    key = (weights, pad_id, seed, repr(pool), tuple(map(tuple, train_ids)))

    def compute():
        rows = np.arange(len(train_ids))
        if len(train_ids) > MAX_FIT_EXAMPLES:
            rows = np.sort(np.random.default_rng(seed).choice(len(train_ids), MAX_FIT_EXAMPLES, replace=False))
        raw = embed(encoder, [train_ids[i] for i in rows], pad_id, pool=pool)
        scaler = fit_scaler(raw)
        return scaler, scaler.transform(raw), rows, key

    return _memo("features", key, compute)


def fit_probe(encoder, train_ids, train_y, pad_id, seed: int = 0, pool=mean_pool):
    """A logistic regression on the standardised pooled features: (scaler, probe)."""
    from sklearn.linear_model import LogisticRegression

    scaler, x, rows, key = probe_features(encoder, train_ids, pad_id, seed, pool)
    y = [train_y[i] for i in rows]

    def compute():
        return LogisticRegression(max_iter=2000).fit(x, y)

    return scaler, _memo("probe", (key, tuple(y)), compute)


def fit_ridge(encoder, train_ids, train_y, pad_id, seed: int = 0):
    """Regression's probe: ridge regression on the same features, its penalty chosen by
    leave-one-out over a log grid: (scaler, weight (1 x d), bias (1,))."""
    from sklearn.linear_model import RidgeCV

    scaler, x, rows, key = probe_features(encoder, train_ids, pad_id, seed)
    y = np.asarray([train_y[i] for i in rows], dtype=np.float64)

    def compute():
        ridge = RidgeCV(alphas=np.logspace(-2, 4, 13)).fit(x, y)
        return ridge.coef_[None, :], np.asarray([ridge.intercept_])

    return (scaler, *_memo("ridge", (key, y.tobytes()), compute))


def fit_multilabel_probe(encoder, train_ids, train_y: np.ndarray, pad_id, seed: int = 0):
    """Multi-label's probe: one logistic regression per label (multi-hot `train_y`, n x L):
    (scaler, weight (L x d), bias (L,)). A label that is always or never present in training
    gets no weights and the log-odds of its frequency as bias."""
    from sklearn.linear_model import LogisticRegression

    scaler, x, rows, key = probe_features(encoder, train_ids, pad_id, seed)
    y = np.asarray(train_y)[rows]

    def compute():
        weight, bias = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
        for j in range(y.shape[1]):
            if 0 < y[:, j].sum() < len(y):
                fit = LogisticRegression(max_iter=2000).fit(x, y[:, j])
                weight[j], bias[j] = fit.coef_[0], fit.intercept_[0]
            else:
                share = np.clip(y[:, j].mean(), 1e-3, 1 - 1e-3)
                bias[j] = np.log(share / (1 - share))
        return weight, bias

    return (scaler, *_memo("label probes", (key, y.shape, y.tobytes()), compute))


def linear_probe(encoder, train_ids, train_y, test_ids, test_y, labels, pad_id, metrics_fn, seed: int = 0,
                 pool=mean_pool) -> dict:
    scaler, probe = fit_probe(encoder, train_ids, train_y, pad_id, seed, pool)
    x_test = scaler.transform(embed(encoder, test_ids, pad_id, pool=pool))
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


SPAN_PROBE_WINDOWS = 1000  # training windows the span probe reads (their token states are held in memory)


def fit_span_probe(encoder, rows: list[dict], pad_id: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Extractive QA's probe: one linear map from each token's frozen last hidden state to a
    start and an end logit, fitted like the QA head (a softmax over a window's positions for
    each), on at most SPAN_PROBE_WINDOWS windows. Returns (weight 2 x hidden, bias 2), the
    shape of transformers' `qa_outputs` layer, so the head can start as it."""
    with torch.no_grad():
        weights = sum(float(p.double().sum()) for p in encoder.parameters())
    key = (weights, pad_id, seed, tuple((tuple(r["input_ids"]), r["start_positions"], r["end_positions"]) for r in rows))

    def compute():
        chosen = np.arange(len(rows))
        if len(rows) > SPAN_PROBE_WINDOWS:
            chosen = np.sort(np.random.default_rng(seed).choice(len(rows), SPAN_PROBE_WINDOWS, replace=False))
        states = token_states(encoder, [rows[i] for i in chosen], pad_id)
        targets = torch.tensor([[rows[i]["start_positions"], rows[i]["end_positions"]] for i in chosen])
        return _fit_positions(states, targets, seed)

    return _memo("span probe", key, compute)


def token_states(encoder, rows: list[dict], pad_id: int, batch_size: int = 32) -> list[torch.Tensor]:
    """Each row's last hidden states (tokens x hidden, float16 to halve the memory), untuned."""
    from tunesmith.data.batching import collate_rows

    out: list = [None] * len(rows)
    device = next(encoder.parameters()).device
    keep = ("input_ids", "token_type_ids")
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            for indices in inference_batches([len(r["input_ids"]) for r in rows], batch_size):
                batch = collate_rows([{k: rows[i][k] for k in keep if k in rows[i]} for i in indices], pad_id)
                hidden = encoder(**{k: v.to(device) for k, v in batch.items()}).last_hidden_state
                for row, i in enumerate(indices):
                    out[i] = hidden[row, : len(rows[i]["input_ids"])].to(torch.float16).cpu()
    finally:
        encoder.train(was_training)
    return out


def _fit_positions(states: list[torch.Tensor], targets: torch.Tensor, seed: int, epochs: int = 60):
    """Adam on the two softmax losses over positions, in length-sorted batches of 64."""
    torch.manual_seed(seed)
    layer = torch.nn.Linear(states[0].shape[1], 2)
    optimiser = torch.optim.Adam(layer.parameters(), lr=1e-2, weight_decay=1e-4)
    order = sorted(range(len(states)), key=lambda i: len(states[i]))
    batches = [order[i : i + 64] for i in range(0, len(order), 64)]
    padded = []
    for batch in batches:
        width = max(len(states[i]) for i in batch)
        x = torch.zeros(len(batch), width, states[0].shape[1], dtype=torch.float16)
        mask = torch.zeros(len(batch), width, dtype=torch.bool)
        for row, i in enumerate(batch):
            x[row, : len(states[i])] = states[i]
            mask[row, : len(states[i])] = True
        padded.append((x, mask, targets[batch]))
    with torch.enable_grad():
        for _ in range(epochs):
            for x, mask, target in padded:
                logits = layer(x.float()).masked_fill(~mask[..., None], -1e4)
                loss = (torch.nn.functional.cross_entropy(logits[..., 0], target[:, 0])
                        + torch.nn.functional.cross_entropy(logits[..., 1], target[:, 1])) / 2
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()
