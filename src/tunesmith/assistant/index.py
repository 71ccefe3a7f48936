"""A vector index over the knowledge base's answers: FAISS inner product on unit vectors (so the
score is cosine similarity), exact up to EXACT_ROWS entries and an HNSW graph above, which keeps
a search at a million entries in milliseconds. Saved in FAISS's own format (no pickle); without
FAISS, an exact NumPy search over a .npy file (allow_pickle off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tunesmith.evaluate.features import normalise
from tunesmith.quality.neighbours import backend, faiss_index


class VectorIndex:
    def __init__(self, vectors: np.ndarray, built=None):
        self.vectors = normalise(vectors)
        self.faiss = built if built is not None else (faiss_index(self.vectors) if backend() == "faiss" else None)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, entry rows) of each query's k nearest entries, best first."""
        queries, k = normalise(queries), min(k, len(self.vectors))
        if self.faiss is not None:
            sims, rows = self.faiss.search(queries, k)
            return sims, rows.astype(np.int64)
        scores = queries @ self.vectors.T
        rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, rows, axis=1), rows

    def save(self, folder: Path) -> None:
        np.save(folder / "vectors.npy", self.vectors, allow_pickle=False)
        if self.faiss is not None:  # an HNSW graph takes minutes to build at a million entries: keep it
            import faiss

            faiss.write_index(self.faiss, str(folder / "index.faiss"))

    @classmethod
    def load(cls, folder: Path) -> "VectorIndex":
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        if backend() == "faiss" and (folder / "index.faiss").is_file():
            import faiss

            return cls(vectors, faiss.read_index(str(folder / "index.faiss")))
        return cls(vectors)

