"""Likely label errors from training dynamics: what the model did with each row while it trained.

A row whose label is wrong fights the rest of its class: the model, learning the pattern the
other rows share, keeps putting it on the wrong side, and only memorises it late, if at all.
The Area Under the Margin (Pleiss et al., 2020) measures that: the margin of the given label's
logit over the largest other logit, averaged over every time the row was trained on. A
negative average means the model preferred another class for most of the run.

`Dynamics` records the logits of each training forward pass the loop already makes (a forward
hook: no extra passes), one slot per row and epoch, so a resumed run overwrites the slots it
replays instead of counting them twice. It saves itself beside the run's checkpoints.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tunesmith.io import atomic_path
from tunesmith.quality.labels import Suspect

FILE = "dynamics.npz"  # in the run's quality/ folder
# Logits kept as float16: margins need a few digits, and the recording stays small (2 bytes per
# row, class and epoch: 10,000 rows x 77 classes x 3 epochs is 4.6 MB).
DTYPE = np.float16


class Dynamics:
    """Per-row, per-epoch logits of the training split, recorded during `fit`."""

    def __init__(self, targets: list[int], n_classes: int, epochs: int):
        self.targets = np.asarray(targets)
        self.logits = np.full((max(1, epochs), len(targets), n_classes), np.nan, dtype=DTYPE)
        self._rows: list[int] | None = None  # the micro-batch the next training forward pass is for
        self._epoch = 0

    @classmethod
    def for_run(cls, features, n_classes: int, total_steps: int, steps_per_epoch: int) -> "Dynamics | None":
        """A recorder for single-label training features (an int class per row), else None."""
        targets = [row.get("labels") for row in features.rows]
        if not targets or not all(isinstance(t, int) for t in targets):
            return None
        return cls(targets, n_classes, math.ceil(total_steps / max(1, steps_per_epoch)))

    def attach(self, model):
        """Record the logits of every forward pass `watching` announces; returns the hook's handle."""
        return model.register_forward_hook(self._record)

    @contextmanager
    def watching(self, rows: list[int], epoch: int):
        """The next forward pass is the training pass of `rows` in `epoch` (a perturbed second
        pass, as adversarial training makes, is not recorded: the first one is the row's)."""
        self._rows, self._epoch = list(rows), epoch
        try:
            yield
        finally:
            self._rows = None

    def _record(self, _module, _inputs, output) -> None:
        rows, self._rows = self._rows, None
        logits = getattr(output, "logits", None)
        if rows is None or logits is None or logits.dim() != 2 or logits.shape[0] != len(rows):
            return  # evaluation, or outputs not one row per example (pooled windows)
        if self._epoch >= len(self.logits):
            return
        self.logits[self._epoch, rows] = logits.detach().float().cpu().numpy().astype(DTYPE)

    # ---- persistence ---------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / FILE) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, logits=self.logits, targets=self.targets)

    def load(self, folder: Path) -> None:
        """The slots an interrupted run recorded, when its file matches this run's shape."""
        path = folder / FILE
        if not path.is_file():
            return
        with np.load(path, allow_pickle=False) as saved:
            if saved["logits"].shape == self.logits.shape and np.array_equal(saved["targets"], self.targets):
                self.logits = saved["logits"].astype(DTYPE)

    @classmethod
    def read(cls, folder: Path) -> "Dynamics | None":
        path = folder / FILE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            found = cls(saved["targets"].tolist(), saved["logits"].shape[2], saved["logits"].shape[0])
            found.logits = saved["logits"].astype(DTYPE)
        return found

    # ---- what they say -------------------------------------------------------------------

    def margins(self) -> np.ndarray:
        """(epochs x rows) margin of the given label's logit over the largest other one; NaN
        where a row was not trained on in an epoch."""
        logits = self.logits.astype(np.float32)
        rows = np.arange(logits.shape[1])
        given = logits[:, rows, self.targets]
        others = logits.copy()
        others[:, rows, self.targets] = -np.inf
        return given - others.max(axis=2)

    def aum(self) -> np.ndarray:
        """The Area Under the Margin per row: its margins averaged over the epochs it was
        trained in (NaN for a row never trained on)."""
        margins = self.margins()
        seen = ~np.isnan(margins)
        total = np.where(seen, margins, 0.0).sum(axis=0)
        return np.where(seen.any(axis=0), total / np.maximum(seen.sum(axis=0), 1), np.nan)

    def mean_probs(self) -> np.ndarray:
        """(rows x classes) softmax probabilities averaged over the epochs (Dataset
        Cartography's confidence, per class)."""
        logits = self.logits.astype(np.float32)
        seen = ~np.isnan(logits[..., 0])
        shifted = np.where(seen[..., None], logits, 0.0)
        shifted = shifted - shifted.max(axis=2, keepdims=True)
        probs = np.exp(shifted)
        probs /= probs.sum(axis=2, keepdims=True)
        probs = np.where(seen[..., None], probs, 0.0).sum(axis=0)
        return probs / np.maximum(seen.sum(axis=0), 1)[:, None]

    def suspects(self) -> list[Suspect]:
        """Rows with a negative AUM, most negative first, with the class the model preferred."""
        aum, probs = self.aum(), self.mean_probs()
        found = []
        for row in np.flatnonzero(aum < 0):
            given = int(self.targets[row])
            ranked = np.argsort(-probs[row])
            suggested = int(ranked[0] if ranked[0] != given else ranked[1])
            found.append((float(aum[row]), Suspect(int(row), given, suggested, float(probs[row, suggested]),
                                                   float(probs[row, given]))))
        return [suspect for _, suspect in sorted(found, key=lambda pair: pair[0])]
