"""Image findings: near-duplicate images across splits (a perceptual hash: the same picture
resized, recompressed or lightly edited keeps its hash within a few bits) and images of a
single colour (blank scans, failed exports)."""

from __future__ import annotations

import numpy as np

HASH_SIDE = 8  # an 8x8 difference hash: 64 bits
NEAR_BITS = 4  # hashes at most this many bits apart are the same picture (of 64)
FLAT_STD = 2.0  # grey-level spread (0-255) below which an image is one colour


def read_grey(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"), dtype=np.float32)


def difference_hash(grey: np.ndarray) -> int:
    """dHash: shrink to 9x8, and one bit per pixel: brighter than its right neighbour."""
    from PIL import Image

    small = np.asarray(Image.fromarray(grey.astype(np.uint8)).resize((HASH_SIDE + 1, HASH_SIDE), Image.LANCZOS),
                       dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def hashes_and_flat(paths: list[str]) -> tuple[np.ndarray, list[int]]:
    """(a 64-bit hash per image, rows whose pixels are all one colour)."""
    hashes, flat = np.zeros(len(paths), dtype=np.uint64), []
    for i, path in enumerate(paths):
        grey = read_grey(path)
        hashes[i] = difference_hash(grey)
        if grey.std() < FLAT_STD:
            flat.append(i)
    return hashes, flat


def near_duplicate_images(train_hashes: np.ndarray, query_hashes: np.ndarray,
                          max_bits: int = NEAR_BITS) -> list[tuple[int, int, int]]:
    """(query row, train row, bits apart) for each query image within `max_bits` of a training image."""
    found = []
    for q, h in enumerate(query_hashes):
        distance = _popcount(np.bitwise_xor(train_hashes, h))
        if len(distance) and distance.min() <= max_bits:
            t = int(distance.argmin())
            found.append((q, t, int(distance[t])))
    return found


def _popcount(values: np.ndarray) -> np.ndarray:
    as_bytes = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(1)
