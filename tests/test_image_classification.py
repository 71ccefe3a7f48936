"""Image classification with tiny Hugging Face backbones built in the test: folders, corrupt
files, augmentation on the training split only, batch-norm statistics in checkpoints."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from conftest import interrupt_during_second_evaluation
from tunesmith.cli import main
from tunesmith.config import TrainConfig
from tunesmith.tasks import TASKS

IMAGES = TASKS["image-classification"]
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def _save_backbone(folder, config):
    from transformers import AutoModelForImageClassification

    torch.manual_seed(0)
    AutoModelForImageClassification.from_config(config).save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"height": 16, "width": 16}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_resnet(tmp_path_factory) -> str:
    from transformers import ResNetConfig

    return _save_backbone(tmp_path_factory.mktemp("tiny-resnet"), ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=2))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> str:
    from transformers import ViTConfig

    return _save_backbone(tmp_path_factory.mktemp("tiny-vit"), ViTConfig(
        image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2))


def make_folder(root, per_class: int = 30, seed: int = 0, corrupt: bool = True):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    if corrupt:
        (root / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    return str(root)


def _args(data, model, out, name, *extra):
    return ["train", "--task", "image-classification", "--data", data, "--model", model, "--output", str(out),
            "--name", name, "--batch-size", "8", "--epochs", "4", "--lr", "3e-3", "--method", "full", "--seed", "0",
            "--image-flip", *extra]  # colour patches: a mirrored one keeps its label


@pytest.fixture(scope="module")
def image_run(tiny_resnet, tmp_path_factory):
    base = tmp_path_factory.mktemp("images")
    data = make_folder(base / "photos")
    assert main(_args(data, tiny_resnet, base / "runs", "r")) == 0
    return base / "runs" / "r"


def test_image_folder_trains_skips_the_corrupt_file_and_loads_in_plain_transformers(image_run):
    from transformers import AutoModelForImageClassification

    metrics = json.loads((image_run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.9, metrics["test"]
    assert sorted(metrics["test"]["per_class"]) == ["blue", "green", "red"]
    for split in ("train", "val", "test"):
        assert not any("broken" in json.loads(line)["text"] for line in (image_run / "data" / f"{split}.jsonl").open())
    model = AutoModelForImageClassification.from_pretrained(str(image_run / "model"))
    assert model.config.num_labels == 3
    assert json.loads((image_run / "model" / "preprocessing.json").read_text())["size"] == 16


def test_corrupt_image_is_reported_by_path(tiny_resnet, tmp_path, capsys):
    data = make_folder(tmp_path / "photos", per_class=10)
    assert main(["check", data, "--task", "image-classification", "--model", tiny_resnet, "--lists", str(tmp_path / "lists")]) == 0
    out = capsys.readouterr().out
    assert f"skipped 1 unreadable image(s): {tmp_path / 'photos' / 'red' / 'broken.png'}" in out
    assert main(_args(data, tiny_resnet, tmp_path, "strict", "--bad-images", "error")) == 2
    assert f"{tmp_path / 'photos' / 'red' / 'broken.png'}: cannot read the image" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()


def test_predict_on_a_folder_and_refusal_of_a_corrupt_input(image_run, tmp_path, capsys):
    new = make_folder(tmp_path / "new", per_class=3, seed=9, corrupt=False)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(image_run), new, "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out, encoding="utf-8")))
    assert len(rows) == 9
    correct = sum(row["label"] == row["image"].split("/")[-2] for row in rows)
    assert correct >= 8, rows
    (tmp_path / "new" / "red" / "bad.png").write_bytes(b"garbage")
    assert main(["predict", str(image_run), new, "-o", str(tmp_path / "p2.csv")]) == 2
    assert "bad.png: cannot read the image" in capsys.readouterr().err and not (tmp_path / "p2.csv").exists()


def test_augmentation_touches_the_training_split_only(tiny_resnet, tmp_path):
    make_folder(tmp_path / "photos", per_class=2, corrupt=False)
    paths = [str(p) for p in sorted((tmp_path / "photos").rglob("*.png"))]
    processor = IMAGES.load_processor(tiny_resnet, TrainConfig(task="image-classification", image_size=16))
    train = IMAGES.encode(processor, paths, None, [], 0, augment=True)
    val = IMAGES.encode(processor, paths, None, [], 0, augment=False)
    torch.manual_seed(0)
    a, b = train.batch([0, 1])["pixel_values"], train.batch([0, 1])["pixel_values"]
    assert a.shape == (2, 3, 16, 16) and not torch.equal(a, b)  # random crops and flips
    assert torch.equal(val.batch([0, 1])["pixel_values"], val.batch([0, 1])["pixel_values"])


def test_checkpoints_keep_batch_norm_statistics(image_run):
    from safetensors.torch import load_file

    saved = load_file(str(image_run / "checkpoints" / "best" / "trainable.safetensors"))
    running = [k for k in saved if k.endswith("running_mean")]
    assert running, "batch-norm running means must be checkpointed with the weights"
    from transformers import AutoModelForImageClassification

    exported = AutoModelForImageClassification.from_pretrained(str(image_run / "model")).state_dict()
    assert all(torch.equal(saved[k], exported[k]) for k in running)


def test_lora_on_a_vision_transformer(tiny_vit, tmp_path):
    data = make_folder(tmp_path / "photos", per_class=12, corrupt=False)
    assert main(_args(data, tiny_vit, tmp_path, "vit", "--method", "lora", "--lora-r", "2", "--epochs", "1")) == 0
    assert (tmp_path / "vit" / "adapter").is_dir() and (tmp_path / "vit" / "metrics.json").is_file()


def test_task_is_inferred_only_where_the_data_is_unambiguous(tmp_path, toy_csv):
    from tunesmith.config import build_config

    photos = make_folder(tmp_path / "photos", per_class=1, corrupt=False)
    conll = tmp_path / "ner"
    conll.mkdir()
    (conll / "train.txt").write_text("-DOCSTART- -X- O\n\nJohn NNP B-PER\nruns VBZ O\n", encoding="utf-8")
    assert build_config({"data": photos}, "flags").task == "image-classification"
    assert build_config({"data": "digits"}, "flags").task == "image-classification"
    assert build_config({"data": str(conll)}, "flags").task == "token-classification"
    assert build_config({"data": str(conll / "train.txt")}, "flags").task == "token-classification"
    assert build_config({"data": toy_csv}, "flags").task == "text-classification"
    assert build_config({"data": photos, "task": "text-classification"}, "flags").task == "text-classification"


def test_image_run_interrupted_then_resumed_matches_a_straight_run(tiny_resnet, tmp_path, monkeypatch, capsys):
    """Resume replays the same augmentation draws and batch-norm statistics as a run never cut."""
    data = make_folder(tmp_path / "photos", per_class=12, corrupt=False)
    common = ("--method", "freeze", "--eval-every", "3", "--epochs", "2")
    assert main(_args(data, tiny_resnet, tmp_path, "straight", *common)) == 0

    interrupt_during_second_evaluation(monkeypatch, IMAGES, _args(data, tiny_resnet, tmp_path, "cut", *common))
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["test"] == straight["test"] and resumed["val_best"] == straight["val_best"]
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "cut")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_image_run_serves_base64_and_multipart_uploads_with_predicts_numbers(image_run):
    """Images reach the API as base64 strings or multipart files; both give `predict`'s scores,
    and a payload that is not an image is a 422 naming the input, not a crash."""
    import base64

    pytest.importorskip("fastapi")
    pytest.importorskip("multipart")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import check_settings, run_info
    from tunesmith.serve.settings import ServeSettings

    run = Run(image_run)
    check_settings(ServeSettings(run=str(run.path)))  # image runs are servable
    image = next((image_run.parent.parent / "photos" / "blue").glob("*.png"))
    predictor = Predictor.from_run(run)
    expected = predictor.predict([str(image)])[0]
    key = {"Authorization": "Bearer " + "k" * 24}
    app = create_app(predictor, ServeSettings(run=str(run.path)), KeyRing(["k" * 24]), run_info(run))
    with TestClient(app) as client:
        encoded = base64.b64encode(image.read_bytes()).decode()
        answer = client.post("/v1/predict", json={"inputs": [encoded, "data:image/png;base64," + encoded]}, headers=key)
        assert answer.status_code == 200
        for row in answer.json():
            assert [row["scores"][label] for label in run.labels()] == pytest.approx(expected.tolist(), abs=1e-5)
        upload = client.post("/v1/predict", files=[("inputs", ("a.png", image.read_bytes(), "image/png"))] * 2,
                             headers=key)
        assert upload.status_code == 200 and len(upload.json()) == 2
        assert upload.json()[0]["scores"] == answer.json()[0]["scores"]
        bad = client.post("/v1/predict", json={"inputs": ["aGVsbG8="]}, headers=key)  # base64 of "hello"
        assert bad.status_code == 422 and bad.json()["field"] == "inputs[0]" and "image" in bad.json()["error"]
        assert client.post("/v1/predict", files=[("inputs", ("a.png", b"hello", "image/png"))],
                           headers=key).status_code == 422
        assert client.post("/v1/predict", files=[("inputs", ("a.png", image.read_bytes(), "image/png"))]).status_code == 401
    # An upload streamed without Content-Length, past the body limit: 413, not a 500.
    small = create_app(predictor, ServeSettings(run=str(run.path), max_body_bytes=2000), KeyRing(["k" * 24]),
                       run_info(run))
    boundary = "b0undary"
    part = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"inputs\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + b"x" * 5000 + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for start in range(0, len(part), 500):
            yield part[start:start + 500]

    with TestClient(small) as client:
        big = client.post("/v1/predict", content=chunks(),
                          headers={**key, "content-type": f"multipart/form-data; boundary={boundary}"})
    assert big.status_code == 413, big.text


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(image_run):
    """A small file can decode to a huge bitmap: the header's size is checked before decoding,
    and only the request that sent it fails."""
    import base64
    import io

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient
    from PIL import Image

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    buffer = io.BytesIO()
    Image.new("RGB", (3000, 2000), "blue").save(buffer, format="PNG")  # 6 million pixels in a few KB
    assert len(buffer.getvalue()) < 100_000
    huge = base64.b64encode(buffer.getvalue()).decode()
    small = base64.b64encode((image_run.parent.parent / "photos" / "blue").glob("*.png").__next__().read_bytes()).decode()
    run = Run(image_run)
    key = {"Authorization": "Bearer " + "k" * 24}
    app = create_app(Predictor.from_run(run), ServeSettings(run=str(run.path), max_image_pixels=1_000_000),
                     KeyRing(["k" * 24]), run_info(run))
    with TestClient(app) as client:
        refused = client.post("/v1/predict", json={"inputs": [small, huge]}, headers=key)
        assert refused.status_code == 422 and refused.json()["field"] == "inputs[1]"
        assert "3000x2000 is 6,000,000 pixels, the limit is 1,000,000" in refused.json()["error"]
        assert client.post("/v1/predict", json={"inputs": [small]}, headers=key).status_code == 200


def test_the_input_size_follows_the_images_and_flips_are_checked_not_assumed(tmp_path):
    """8x8 digits were upsampled to the backbone's 224 by default (0.872 test accuracy against
    0.983 at 64 px without flips); the plan reads the images' own size, and `check` says whether
    mirroring would turn one class into another."""
    import numpy as np
    from PIL import Image

    from tunesmith.config import build_config
    from tunesmith.plan import resolve
    from tunesmith.tasks.image_classification import EFFICIENTNET, flip_advice

    for side in (8, 300):
        folder = tmp_path / f"arrows{side}"
        for label, column in (("left", 0), ("right", side - 1)):
            (folder / label).mkdir(parents=True)
            for k in range(6):
                pixels = np.zeros((side, side), dtype=np.uint8)
                pixels[:, column] = 255  # a bar on the left or on the right: mirror images of each other
                pixels[k % side, side // 2] = 128
                Image.fromarray(pixels).save(folder / label / f"{k}.png")
    cfg = build_config({"task": "image-classification", "data": str(tmp_path / "arrows8"), "model": EFFICIENTNET},
                       "flags")
    splits = TASKS["image-classification"].load_data(cfg)
    plan = resolve(cfg, splits)
    assert plan.settings.image_size == 64 and "8 px on their longest side" in plan.reasons["image_size"]
    assert plan.settings.image_flip is False
    big = build_config({**cfg.model_dump(exclude_none=True), "data": str(tmp_path / "arrows300")}, "flags")
    assert resolve(big, TASKS["image-classification"].load_data(big)).settings.image_size == 224
    assert "keep them off" in flip_advice(splits) and "left -> right" in flip_advice(splits)
