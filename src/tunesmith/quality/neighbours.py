"""Nearest training row of each query row by cosine similarity, with FAISS when installed.

FAISS (`pip install tunesmith[quality]`, part of the dev set) searches exactly (a flat inner-
product index) up to EXACT_ROWS training rows and with an HNSW graph above, so a million rows
stay in seconds; without it, an exact search in NumPy blocks (fine to ~100k rows).
"""

from __future__ import annotations

import numpy as np

from tunesmith.evaluate.features import normalise

EXACT_ROWS = 200_000  # beyond this many indexed rows a flat search costs minutes: HNSW instead
BLOCK = 1024  # query rows per NumPy block: bounds the similarity matrix's memory


def backend() -> str:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "numpy"
    return "faiss"


def nearest(index_x: np.ndarray, query_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(similarity, row in index_x) of each query row's nearest indexed row; both unit-length."""
    if len(index_x) == 0 or len(query_x) == 0:
        return np.zeros(len(query_x), dtype=np.float32), np.zeros(len(query_x), dtype=np.int64)
    if backend() == "faiss":
        return _faiss_nearest(normalise(index_x), normalise(query_x))
    index_x, query_x = normalise(index_x), normalise(query_x)
    sims, rows = np.empty(len(query_x), dtype=np.float32), np.empty(len(query_x), dtype=np.int64)
    for start in range(0, len(query_x), BLOCK):
        block = query_x[start:start + BLOCK] @ index_x.T
        rows[start:start + BLOCK] = block.argmax(1)
        sims[start:start + BLOCK] = block[np.arange(len(block)), rows[start:start + BLOCK]]
    return sims, rows


def within(index_x: np.ndarray, query_x: np.ndarray, threshold: float) -> list[list[int]]:
    """For each query row, every indexed row at least `threshold` similar (exact, NumPy blocks:
    meant for a few hundred queries, whose similarity to every indexed row is computed)."""
    index_x, query_x = normalise(index_x), normalise(query_x)
    found = []
    for start in range(0, len(query_x), BLOCK):
        block = query_x[start:start + BLOCK] @ index_x.T
        found += [np.flatnonzero(row >= threshold).tolist() for row in block]
    return found


def faiss_index(vectors: np.ndarray):
    """A FAISS inner-product index over unit `vectors`: flat (exact) up to EXACT_ROWS, HNSW above."""
    import faiss

    dim = vectors.shape[1]
    if len(vectors) <= EXACT_ROWS:
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = 64  # recall of the top neighbour well above 0.99 at this setting
    index.add(vectors)
    return index


def _faiss_nearest(index_x: np.ndarray, query_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims, rows = faiss_index(index_x).search(query_x, 1)
    return sims[:, 0], rows[:, 0].astype(np.int64)


def near_duplicates(index_x: np.ndarray, query_x: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """(query row, index row, similarity) for each query row whose nearest indexed row is at
    least `threshold` similar; most similar first."""
    sims, rows = nearest(index_x, query_x)
    found = [(int(q), int(rows[q]), float(sims[q])) for q in np.flatnonzero(sims >= threshold)]
    return sorted(found, key=lambda f: -f[2])
