"""`tunesmith export` (ONNX) and `--backend onnx` in predict and serve: same answers as PyTorch."""

import json

import numpy as np
import pytest

from conftest import make_rows, train_tiny_run, write_csv
from tunesmith.cli import main
from tunesmith.inference import Predictor
from tunesmith.runs import Run

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TEXTS = ["good good great", "bad awful terrible", "fine", "a much longer text that is good and then bad and good"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_model):
    base = tmp_path_factory.mktemp("onnx")
    run = train_tiny_run(base, tiny_model, "full", "1", 20)
    assert main(["export", str(run)]) == 0
    return run


def test_export_writes_one_file_that_answers_like_pytorch(exported):
    path = exported / "model" / "model.onnx"
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp")) and not (path.parent / "model.onnx.data").exists()
    torch_probs = Predictor.from_run(Run(exported)).predict(TEXTS)
    onnx_probs = Predictor.from_run(Run(exported), "onnx").predict(TEXTS)
    assert onnx_probs.shape == torch_probs.shape == (len(TEXTS), len(Run(exported).labels()))
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-5)


def test_predict_backend_onnx_writes_the_same_labels(exported, tmp_path):
    data = write_csv(tmp_path / "in.csv", make_rows(5, seed=3), fields=("text",))
    outputs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.jsonl"
        assert main(["predict", str(exported), data, "-o", str(out), "--backend", backend]) == 0
        outputs[backend] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["label"] for r in outputs["onnx"]] == [r["label"] for r in outputs["torch"]]
    for a, b in zip(outputs["onnx"], outputs["torch"]):
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-4)


def test_pair_run_exports_with_segment_ids(tmp_path, tiny_model):
    rows = [{"a": r["text"], "b": r["text"][::-1], "label": r["label"]} for r in make_rows(20)]
    data = write_csv(tmp_path / "pairs.csv", rows, fields=("a", "b", "label"))
    assert main(["train", "--data", data, "--model", tiny_model, "--output", str(tmp_path / "runs"), "--name", "p",
                 "--task", "text-pair-classification", "--text-col", "a", "--text-pair-col", "b", "--max-length", "16",
                 "--epochs", "1", "--no-baseline", "--method", "full"]) == 0
    run = Run(tmp_path / "runs" / "p")
    assert main(["export", str(run.path)]) == 0
    pairs = [(t, t[::-1]) for t in TEXTS]
    np.testing.assert_allclose(Predictor.from_run(run, "onnx").predict(pairs), Predictor.from_run(run).predict(pairs),
                               atol=1e-5)


def test_backend_onnx_without_export_says_how_to_make_one(tmp_path, tiny_model, capsys):
    run = train_tiny_run(tmp_path, tiny_model, "freeze", "1", 10)
    data = write_csv(tmp_path / "in.csv", make_rows(2), fields=("text",))
    assert main(["predict", str(run), data, "-o", str(tmp_path / "o.csv"), "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "has no ONNX export" in err and f"tunesmith export {run}" in err
    assert not (tmp_path / "o.csv").exists()


def test_export_refuses_tasks_it_cannot_export(tmp_path, tiny_model, capsys, monkeypatch):
    from tunesmith.tasks import TASKS

    run = train_tiny_run(tmp_path, tiny_model, "freeze", "1", 10)
    with monkeypatch.context() as patch:  # every text task exports; the refusal follows the task's declaration
        patch.setattr(TASKS["text-classification"], "exportable", False)
        assert main(["export", str(run)]) == 2
    assert "text-classification runs cannot be exported yet" in capsys.readouterr().err
    assert not (run / "model" / "model.onnx").exists()
    (run / "ensemble.json").write_text("{}")  # what marks an ensemble run
    assert main(["export", str(run)]) == 2
    assert "is an ensemble; export each of its member runs instead" in capsys.readouterr().err


def test_serve_backend_onnx_answers(exported):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.serve.server import build_app
    from tunesmith.serve.settings import ServeSettings

    app = build_app(ServeSettings(run=str(exported), backend="onnx"))
    with TestClient(app, base_url="http://localhost") as client:  # keyless on loopback: loopback names only
        answer = client.post("/v1/predict", json={"inputs": TEXTS[:2]})
        assert answer.status_code == 200
    expected = Predictor.from_run(Run(exported)).predict(TEXTS[:2])
    got = answer.json()
    labels = Run(exported).labels()
    assert [o["label"] for o in got] == [labels[i] for i in expected.argmax(1)]
