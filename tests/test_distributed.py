"""`tunesmith train` under `accelerate launch` with 2 CPU processes (DDP over gloo) gives the
same model as one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import train_args
from tunesmith.train.distributed import launch_command, local_share


def test_a_micro_batch_is_shared_so_the_averaged_gradient_is_the_whole_batchs():
    indices = [10, 11, 12, 13, 14]
    shares = [local_share(indices, rank, 2) for rank in range(2)]
    assert shares[0][0] + shares[1][0] == [10, 12, 14, 11, 13]
    # Each process's loss is factor * (mean over its share); DDP averages the 2 processes'
    # gradients, so every example ends up weighted factor / (2 * len(share)): 1/5, as in one process.
    assert all(f / (2 * len(s)) == pytest.approx(1 / len(indices)) for s, f in shares)
    assert local_share([7], 1, 2) == ([7], 0.0)  # nothing left for rank 1: it runs one example at weight 0
    assert local_share(indices, 0, 1) == (indices, 1.0)


def _launch(args: list[str], processes: int, env: dict) -> None:
    done = subprocess.run([*launch_command(processes, port=29517), *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, tiny_model, toy_csv):
    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("the accelerate launcher is not installed beside this Python")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--method", "full", "--epochs", "2", "--batch-size", "8", "--eval-every", "5"]
    _launch(train_args(toy_csv, tiny_model, tmp_path, "one", *common), 1, env)
    _launch(train_args(toy_csv, tiny_model, tmp_path, "two", *common), 2, env)

    one, two = (load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("one", "two"))
    assert one.keys() == two.keys()
    start = load_file(str(tiny_model + "/model.safetensors"))
    moved = max((one["bert." + k] - v).abs().max().item() for k, v in start.items())
    assert moved > 1e-3  # training happened, so agreement below is not trivial
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-4), key
    history = {name: [json.loads(line) for line in (tmp_path / name / "history.jsonl").read_text().splitlines()]
               for name in ("one", "two")}
    losses = {name: [row["loss"] for row in rows if "loss" in row] for name, rows in history.items()}
    assert len(losses["one"]) == len(losses["two"])
    assert losses["one"] == pytest.approx(losses["two"], rel=1e-4, abs=1e-5)
    metrics = {name: json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("one", "two")}
    assert metrics["one"]["test"]["accuracy"] == metrics["two"]["test"]["accuracy"]
    assert (metrics["one"]["training"]["processes"], metrics["two"]["training"]["processes"]) == (1, 2)
