import os

import pytest
import torch

from tunesmith.io import atomic_path, write_json
from tunesmith.train import checkpoint
from tunesmith.train.optim import build_optimizer, build_scheduler, lr_factor


def test_atomic_write_leaves_old_file_on_crash(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"half": ')
            raise RuntimeError("crash mid-write")
    assert target.read_text().strip().startswith('{\n  "ok": 1')
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temporary file left behind


def test_checkpoint_round_trip_restores_training_exactly(tmp_path):
    def setup():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
        opt = build_optimizer(model, 1e-2, 0.01)
        return model, opt, build_scheduler(opt, "cosine", 20, 0.1)

    def step(model, opt, sched):
        loss = model(torch.randn(16, 4)).pow(2).mean()  # randn + dropout: the RNG matters
        loss.backward(); opt.step(); sched.step(); opt.zero_grad()

    model, opt, sched = setup()
    for _ in range(3):
        step(model, opt, sched)
    checkpoint.save(tmp_path / "last", model, opt, sched, {"step": 3})
    for _ in range(3):
        step(model, opt, sched)
    expected = [p.detach().clone() for p in model.parameters()]

    model2, opt2, sched2 = setup()
    assert checkpoint.load(checkpoint.find(tmp_path / "last"), model2, opt2, sched2) == {"step": 3}
    for _ in range(3):
        step(model2, opt2, sched2)
    for a, b in zip(expected, model2.parameters()):
        assert torch.equal(a, b)
    assert not any(p.suffix == ".pkl" or p.suffix == ".pt" for p in (tmp_path / "last").iterdir())


def test_find_falls_back_to_previous_checkpoint(tmp_path):
    model = torch.nn.Linear(2, 2)
    checkpoint.save(tmp_path / "last", model, state={"step": 1})
    os.replace(tmp_path / "last", tmp_path / "last.old")  # crash between the two renames
    assert checkpoint.find(tmp_path / "last") == tmp_path / "last.old"


def test_schedules():
    assert lr_factor(0, 100, 10, "linear") == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, "linear") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "cosine") < 0.01
    assert lr_factor(80, 100, 10, "constant") == 1.0


def test_a_new_folder_is_on_disk_before_the_previous_one_is_deleted(tmp_path, monkeypatch):
    """Power-loss safety: every file and folder of the new copy, and the folder holding both
    (the renames), are fsynced before the old copy is removed; a file's rename likewise."""
    import shutil

    from tunesmith import io

    events = []
    real_fsync, real_rmtree = os.fsync, shutil.rmtree
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd)))
    monkeypatch.setattr(shutil, "rmtree", lambda path, **kw: (events.append(("rmtree", str(path))),
                                                              real_rmtree(path, **kw)))
    final = tmp_path / "checkpoint"
    final.mkdir()
    (final / "old.bin").write_bytes(b"old")
    with io.atomic_dir(final) as tmp:
        (tmp / "weights.bin").write_bytes(b"new")
    assert (final / "weights.bin").read_bytes() == b"new" and not (tmp_path / "checkpoint.old").exists()
    removed = events.index(("rmtree", str(tmp_path / "checkpoint.old")))
    synced = {path for kind, path in events[:removed] if kind == "fsync"}
    assert {str(tmp_path), str(tmp), str(tmp / "weights.bin")} <= synced
    events.clear()
    io.write_text(tmp_path / "a.txt", "hello")
    assert ("fsync", str(tmp_path)) in events  # the rename into place


def test_two_writers_of_one_folder_never_delete_each_others_work(tmp_path):
    """atomic_dir once used one `.NAME.tmp` for everyone and cleared it first: two first-time
    model conversions deleted each other's half-written folders. Each writer has its own now,
    a dead writer's leftover is cleared, and for a cache the first to finish wins."""
    import subprocess
    import sys

    from tunesmith.io import atomic_dir, exclusive
    from tunesmith.errors import UserError

    final = tmp_path / "cache" / "model"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    leftover = final.parent / f".model.{dead.stdout.strip()}.x.tmp"  # a writer killed mid-write
    leftover.mkdir(parents=True)
    with atomic_dir(final, keep_existing=True) as first:
        (first / "weights").write_text("first")
        assert not leftover.exists()
        with atomic_dir(final, keep_existing=True) as second:
            (second / "weights").write_text("second")
            assert (first / "weights").read_text() == "first"  # untouched by the second writer
    assert (final / "weights").read_text() == "second"  # it finished first
    assert [p.name for p in final.parent.iterdir()] == ["model"]  # the other copy was dropped
    refusal = "runs/x: another process is writing it now (process {holder})"
    with exclusive(tmp_path / ".x.lock", refusal):
        with pytest.raises(UserError, match=f"runs/x: another process is writing it now \\(process {os.getpid()}\\)"):
            with exclusive(tmp_path / ".x.lock", refusal):
                pass
