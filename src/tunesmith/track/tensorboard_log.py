"""TensorBoard: every run writes event files in RUN/tensorboard/, so `tensorboard --logdir runs`
(pip install tensorboard) shows every run's curves side by side.

The history rows go there as scalars: train/loss, train/lr, train/samples_per_second,
train/memory_mb (resident memory), each extra the loss reports (train/soft_loss, ...), and
val/<metric> at every evaluation. When the run ends, its settings and test metrics are written as
TensorBoard hparams, so runs can be compared by their settings. tensorboardX writes the files (a
small pure-Python package); nothing here needs TensorBoard itself. A resumed run drops the events
logged after its checkpoint (purge_step), as history.jsonl does.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from tunesmith.track import flat_settings, register, scalars

FOLDER = "tensorboard"


def resident_mb() -> float | None:
    """This process's resident memory now (Linux), in MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


@register("tensorboard")
class TensorBoardLog:
    package = extra = None  # tensorboardX is a core dependency

    def __init__(self, run_dir: Path, cfg=None):
        import tensorboardX  # noqa: F401  (missing: ImportError now, and the run goes on without it)

        self.folder = Path(run_dir) / FOLDER
        self.writer = None

    def start(self, resume_step: int | None) -> None:
        from tensorboardX import SummaryWriter

        # tensorboardX names a file by the second it was opened: a second writer in the same second
        # (a resume right after a crash) would overwrite the first's events, so each file gets a
        # suffix of its own.
        self.writer = SummaryWriter(str(self.folder), purge_step=resume_step, flush_secs=10,
                                    filename_suffix=f".{uuid.uuid4().hex[:12]}")

    def row(self, row: dict) -> None:
        step = row["step"]
        for name, value in scalars(row).items():
            self.writer.add_scalar(name, value, step)
        if "loss" in row and (memory := resident_mb()) is not None:
            self.writer.add_scalar("train/memory_mb", memory, step)

    def finish(self, settings: dict, metrics: dict, run_dir: Path) -> None:
        """The run's settings and test metrics as TensorBoard hparams (compare runs by settings)."""
        scores = {f"test/{k}": v for k, v in (metrics.get("test") or {}).items() if isinstance(v, float)}
        self.writer.add_hparams(flat_settings(settings), scores, name="hparams")

    def close(self, status: str) -> None:
        self.writer.close()
