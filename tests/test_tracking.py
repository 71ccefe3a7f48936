"""Experiment tracking: a real MLflow tracking server on loopback (SQLite backend) receives a
tiny run and a tune study (parent and child runs), read back through MLflow's own client; W&B
in offline mode; a tracker that cannot be reached never stops a run; a missing package is
refused before any work; a run's status (finished, failed, interrupted, running)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port, train_args
from tunesmith.cli import main


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow")
    import urllib.request

    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                               "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"],
                              cwd=folder, stdout=open(folder / "server.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"the MLflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


def test_a_run_and_a_study_land_in_a_real_mlflow_server(mlflow_server, tmp_path, toy_csv, tiny_model):
    from mlflow.tracking import MlflowClient

    assert main(train_args(toy_csv, tiny_model, tmp_path / "runs", "tracked", "--epochs", "2", "--track", "mlflow",
                           "--tracking-uri", mlflow_server, "--experiment", "tests")) == 0
    run_dir = tmp_path / "runs" / "tracked"
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow_run_id"]

    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tracked"
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert run.data.params["method"] == config["method"]  # every setting is a param
    assert run.data.params["lr"] == "0.003" and run.data.params["max_length"] == "16"
    losses = client.get_metric_history(run_id, "train/loss")
    assert len(losses) == json.loads((run_dir / "metrics.json").read_text())["training"]["steps"]
    assert [m.step for m in losses] == sorted(m.step for m in losses)
    assert client.get_metric_history(run_id, "val/macro_f1")
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert run.data.metrics["test/macro_f1"] == pytest.approx(test["macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "report.html", "model"} <= artifacts
    assert "model/config.json" in {a.path for a in client.list_artifacts(run_id, "model")}

    # A tune study: one parent run, its trials as children.
    assert main(["tune", toy_csv, "--model", tiny_model, "--trials", "2", "--output", str(tmp_path / "runs"),
                 "--max-length", "16", "--batch-size", "8", "--epochs", "1", "--no-baseline", "--pruner", "none",
                 "--track", "mlflow", "--tracking-uri", mlflow_server, "--experiment", "tests"]) == 0
    experiment = client.get_experiment_by_name("tests").experiment_id
    studies = client.search_runs([experiment], "tags.`tunesmith.kind` = 'study'")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{studies[0].info.run_id}'")
    assert len(children) == 2
    assert "best/val_macro_f1" in client.get_run(studies[0].info.run_id).data.metrics


def test_mlflow_defaults_to_a_sqlite_store_beside_the_runs_and_resume_continues_its_run(tmp_path, toy_csv, tiny_model,
                                                                                       monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from conftest import interrupt_during_second_evaluation
    from tunesmith.tasks import TASKS

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    args = train_args(toy_csv, tiny_model, runs, "local", "--epochs", "3", "--track", "mlflow")
    interrupt_during_second_evaluation(monkeypatch, TASKS["text-classification"], args)
    run_id = json.loads((runs / "local" / "tracking.json").read_text())["mlflow_run_id"]
    client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    assert client.get_run(run_id).info.status == "KILLED"  # Ctrl-C: the MLflow run says so
    assert main(["train", "--resume", str(runs / "local")]) == 0
    run = client.get_run(run_id)  # the same MLflow run, continued
    assert run.info.status == "FINISHED" and "test/macro_f1" in run.data.metrics
    steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
    history = [json.loads(line) for line in (runs / "local" / "history.jsonl").read_text().splitlines()]
    assert sorted(steps) == sorted({r["step"] for r in history if "loss" in r})  # each step once, none missing
    assert (runs / "mlartifacts").is_dir()  # artifacts beside the runs, not in the working directory
    assert {"config.yaml", "model"} <= {a.path for a in client.list_artifacts(run_id)}


def test_an_unreachable_tracker_warns_once_and_the_run_finishes(tmp_path, toy_csv, tiny_model, monkeypatch, capsys):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(train_args(toy_csv, tiny_model, tmp_path, "offline", "--epochs", "1", "--track", "mlflow",
                           "--tracking-uri", closed)) == 0
    out = capsys.readouterr().out
    assert out.count("warning: tracking to mlflow stopped") == 1, out
    assert (tmp_path / "offline" / "metrics.json").is_file()


def test_wandb_offline_keeps_the_curves_and_results(tmp_path, toy_csv, tiny_model, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # W&B's own cache and settings stay in the test's folder
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    assert main(train_args(toy_csv, tiny_model, tmp_path / "runs", "wb", "--epochs", "1", "--track", "wandb")) == 0
    # run.finish() only tells W&B's background service that the run is over; the service writes the
    # rest of the offline file when it closes the stream, a moment later (a process's exit waits for
    # it, but this test reads the file in the same process). teardown() waits for the service.
    import wandb

    wandb.teardown()
    run_dir = tmp_path / "runs" / "wb"
    run_id = json.loads((run_dir / "tracking.json").read_text())["wandb_run_id"]
    files = list((run_dir / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))
    assert len(files) == 1, sorted(str(p) for p in (run_dir / "wandb").rglob("*"))[:20]
    history, summary = _wandb_records(files[0])
    steps = json.loads((run_dir / "metrics.json").read_text())["training"]["steps"]
    assert [int(row["_step"]) for row in history] == list(range(1, steps + 1))
    assert all("train/loss" in row for row in history) and "val/macro_f1" in history[-1]
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert float(summary["test/macro_f1"]) == pytest.approx(test["macro_f1"])


def _wandb_records(path: Path) -> tuple[list[dict], dict]:
    """(history rows, final summary) of a W&B offline run file: W&B's LevelDB-style log (a 7-byte
    file header, 32 KiB blocks of records: CRC (4), length (2), type (1: full, 2-4: first, middle,
    last piece)) of `Record` protobufs, read with W&B's own protobuf classes."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, chunk, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(raw):
        space = 32768 - pos % 32768
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        if space < 7 or (length == 0 and kind == 0):  # the rest of a block is padding
            pos += space
            continue
        chunk += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunk)
            records.append(record)
            chunk = b""
    history, summary = [], {}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "history":
            history.append({item.key or "/".join(item.nested_key): item.value_json for item in record.history.item})
        elif kind == "summary":
            summary.update({item.key or "/".join(item.nested_key): item.value_json for item in record.summary.update})
    return history, summary


def test_track_without_its_package_is_refused_before_any_work(tmp_path, toy_csv, tiny_model, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main(train_args(toy_csv, tiny_model, tmp_path, "nope", "--track", "wandb")) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: --track wandb: the wandb package is not installed")
    assert not (tmp_path / "nope").exists()


def test_run_status_tells_finished_failed_interrupted_and_running(tmp_path):
    import fcntl

    from tunesmith.runs import Run, record_ending, status

    run = Run(tmp_path / "r")
    run.path.mkdir()
    assert status(run) == "interrupted"  # a folder without an ending: killed with -9
    record_ending(run, RuntimeError("out of memory\nsecond line"))
    assert status(run) == "failed"
    assert json.loads((run.path / "ending.json").read_text())["error"] == "out of memory"
    record_ending(run, KeyboardInterrupt())
    assert status(run) == "interrupted"
    fd = os.open(run.path / ".lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a training process holds
    try:
        # flock is per open file: probing from this process through a new descriptor still
        # sees the holder, as another process would.
        assert status(run) == "running"
    finally:
        os.close(fd)
    (run.path / "metrics.json").write_text("{}")
    assert status(run) == "finished"
