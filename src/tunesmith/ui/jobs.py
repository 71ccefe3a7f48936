"""Training runs started from the dashboard: each is `tunesmith train` in a subprocess of its own,
so a crash or Ctrl-C in training never takes the dashboard down, and the run folder is an
ordinary run (resumable from the command line too).

Data comes from the allowed folders only (the runs folder and `ui --data-dir`), or a built-in
dataset name: a page cannot make the server read an arbitrary file. Cancelling sends SIGINT,
which the trainer turns into "interrupted, checkpoint kept": the run can be resumed. A run that
has not stopped STOP_GRACE seconds later is killed: its checkpoints are written atomically, so
the last complete one still resumes it, and a cancel always ends the job.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tunesmith.data import builtin
from tunesmith.errors import UserError

DATA_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt", ".conll")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,80}$")
LOG_TAIL = 40  # lines of a job's output the page shows
# Ctrl-C stops a run between steps, in well under a second for any model this machine can
# train; a process still running this long after it is stuck somewhere the signal cannot reach.
STOP_GRACE = 30.0


@dataclass
class Job:
    id: int
    run_id: str
    args: list[str]
    process: subprocess.Popen
    log_path: Path
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    def state(self) -> str:
        code = self.process.poll()
        if code is None:
            return "running"
        return "finished" if code == 0 else ("cancelled" if self.cancelled else "failed")

    def view(self) -> dict:
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
        except OSError:
            tail = []
        return {"id": self.id, "run_id": self.run_id, "state": self.state(), "exit_code": self.process.poll(),
                "started": self.started, "log": tail}


class Jobs:
    def __init__(self, root: Path, data_dirs: list[Path]):
        self.root = root.resolve()
        self.data_dirs = [self.root] + [d.resolve() for d in data_dirs]
        self.jobs: dict[int, Job] = {}
        self.counter = itertools.count(1)
        self.lock = threading.Lock()

    # ---- what may be trained on -----------------------------------------------------------
    def data_files(self, limit: int = 500) -> list[dict]:
        """Data files under the allowed folders (never inside a run folder), and the built-in sets."""
        found = []
        for folder in self.data_dirs:
            for parent, dirs, files in os.walk(folder):
                # A run folder's own splits are not training data to offer, and its checkpoints
                # and models are large trees: the walk does not go into them.
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and not (Path(parent) / d / "config.yaml").is_file())
                for name in sorted(files):
                    path = Path(parent) / name
                    if path.suffix.lower() in DATA_SUFFIXES and len(found) < limit:
                        found.append({"value": str(path), "label": str(path.relative_to(folder))})
        return found + [{"value": name, "label": f"{name} (built-in)"} for name in builtin.names()]

    def allowed_data(self, data: str) -> str:
        if data in builtin.names():
            return data
        path = Path(data).resolve()
        if not any(path.is_relative_to(folder) for folder in self.data_dirs) or not path.is_file():
            raise UserError(f"data {data!r}: choose a file under {', '.join(map(str, self.data_dirs))} "
                            "or a built-in dataset")
        return str(path)

    # ---- starting, cancelling, resuming ---------------------------------------------------
    def start(self, data: str, task: str, method: str, name: str, settings: dict) -> Job:
        if not NAME.match(name):
            raise UserError(f"name {name!r}: letters, digits, '.', '_' and '-' only (it names the run folder)")
        if (self.root / name).exists():
            raise UserError(f"name {name!r}: a run of that name exists; choose another")
        args = ["train", "--data", self.allowed_data(data), "--task", task, "--method", method,
                "--output", str(self.root), "--name", name]
        for key, value in settings.items():
            if value is not None and value != "":
                args += [f"--{key.replace('_', '-')}", str(value)]
        return self._launch(name, args)

    def resume(self, run_id: str) -> Job:
        if any(job.run_id == run_id and job.state() == "running" for job in self.jobs.values()):
            raise UserError(f"{run_id} is already training")
        return self._launch(run_id, ["train", "--resume", str(self.root / run_id)])

    def cancel(self, job_id: int) -> Job:
        job = self.get(job_id)
        if job.state() == "running":
            job.cancelled = True
            job.process.send_signal(signal.SIGINT)  # the trainer keeps its checkpoint: resumable
            threading.Thread(target=_stop_within, args=(job.process, STOP_GRACE), daemon=True).start()
        return job

    def get(self, job_id: int) -> Job:
        if job_id not in self.jobs:
            raise UserError(f"no job {job_id}")
        return self.jobs[job_id]

    def _launch(self, run_id: str, args: list[str]) -> Job:
        with self.lock:
            job_id = next(self.counter)
            logs = self.root / ".ui-jobs"
            logs.mkdir(parents=True, exist_ok=True)
            log_path = logs / f"job-{job_id}-{os.getpid()}.log"
            with open(log_path, "w", encoding="utf-8") as out:
                process = subprocess.Popen([sys.executable, "-m", "tunesmith", *args], stdout=out,
                                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
            job = Job(job_id, run_id, args, process, log_path)
            self.jobs[job_id] = job
            return job

    def stop_all(self) -> None:
        """The dashboard is closing: its training runs are interrupted (resumable), not orphaned."""
        for job in self.jobs.values():
            if job.state() == "running":
                job.process.send_signal(signal.SIGINT)
        for job in self.jobs.values():
            _stop_within(job.process, STOP_GRACE)


def _stop_within(process: subprocess.Popen, seconds: float) -> None:
    """Wait for an interrupted process to exit; kill it if it has not within `seconds`."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
