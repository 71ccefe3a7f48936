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
# Training runs at once; more wait in a queue. Two would share this machine's cores and each take
# twice as long, and a page could otherwise start as many as it likes.
MAX_RUNNING = 1
# What a trainer process is given of the dashboard's environment: where caches and libraries
# are, and how many threads to use. Keys, secrets and tokens stay with the dashboard.
ENV_ALLOWED = ("PATH", "HOME", "LANG", "TMPDIR", "TEMP", "TMP", "USER", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHASHSEED",
               "TOKENIZERS_PARALLELISM", "TUNESMITH_CACHE")
ENV_PREFIXES = ("LC_", "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_", "TRANSFORMERS_", "TORCH", "OMP_", "MKL_",
                "OPENBLAS_", "CUDA_", "XDG_")
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
    process: subprocess.Popen | None  # None while it waits in the queue
    log_path: Path
    started: float = field(default_factory=time.time)
    cancelled: bool = False

    def state(self) -> str:
        if self.process is None:
            return "cancelled" if self.cancelled else "queued"
        code = self.process.poll()
        if code is None:
            return "running"
        return "finished" if code == 0 else ("cancelled" if self.cancelled else "failed")

    def view(self) -> dict:
        try:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL:]
        except OSError:
            tail = []
        return {"id": self.id, "run_id": self.run_id, "state": self.state(),
                "exit_code": self.process.poll() if self.process is not None else None,
                "started": self.started, "log": tail}


class Jobs:
    def __init__(self, root: Path, data_dirs: list[Path], max_running: int = MAX_RUNNING):
        self.root = root.resolve()
        self.data_dirs = [self.root] + [d.resolve() for d in data_dirs]
        self.jobs: dict[int, Job] = {}
        self.counter = itertools.count(1)
        self.lock = threading.Lock()
        self.max_running = max_running
        self._watcher: threading.Thread | None = None
        self._closing = False

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

    def allowed_model(self, model: str) -> str:
        """A built-in model name, or a model folder under the allowed folders: a page cannot make
        the server download a Hub model of any size or read a folder elsewhere."""
        from tunesmith.e5small import E5_NAMES
        from tunesmith.gguf import SMOLLM2_NAMES
        from tunesmith.models import MINILM_NAMES
        from tunesmith.tasks.image_classification import EFFICIENTNET

        if model.lower() in MINILM_NAMES | E5_NAMES | SMOLLM2_NAMES | {EFFICIENTNET}:
            return model
        path = Path(model).resolve()
        if not any(path.is_relative_to(folder) for folder in self.data_dirs) or not (path / "config.json").is_file():
            raise UserError(f"model {model!r}: choose a built-in model (minilm, e5-small, smollm2, efficientnet-lite0) "
                            f"or a model folder under {', '.join(map(str, self.data_dirs))}")
        return str(path)

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
        if not NAME.fullmatch(name):  # match() would let a trailing newline through ($ matches before it)
            raise UserError(f"name {name!r}: letters, digits, '.', '_' and '-' only (it names the run folder)")
        if (self.root / name).exists():
            raise UserError(f"name {name!r}: a run of that name exists; choose another")
        args = ["train", "--data", self.allowed_data(data), "--task", task, "--method", method,
                "--output", str(self.root), "--name", name]
        if settings.get("model"):
            settings = {**settings, "model": self.allowed_model(str(settings["model"]))}
        for key, value in settings.items():
            if value is not None and value != "":
                args += [f"--{key.replace('_', '-')}", str(value)]
        return self._launch(name, args)

    def resume(self, run_id: str) -> Job:
        if any(job.run_id == run_id and job.state() in ("running", "queued") for job in self.jobs.values()):
            raise UserError(f"{run_id} is already training")
        return self._launch(run_id, ["train", "--resume", str(self.root / run_id)])

    def cancel(self, job_id: int) -> Job:
        job = self.get(job_id)
        with self.lock:
            if job.state() == "queued":  # it never started: nothing to interrupt
                job.cancelled = True
                return job
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
        """The job queued, and started now if a slot is free."""
        with self.lock:
            job_id = next(self.counter)
            logs = self.root / ".ui-jobs"
            logs.mkdir(parents=True, exist_ok=True)
            job = Job(job_id, run_id, args, None, logs / f"job-{job_id}-{os.getpid()}.log")
            self.jobs[job_id] = job
        self.start_queued()
        if self._watcher is None:  # starts queued jobs as running ones end
            self._watcher = threading.Thread(target=self._watch, daemon=True)
            self._watcher.start()
        return job

    def start_queued(self) -> None:
        with self.lock:
            running = sum(job.state() == "running" for job in self.jobs.values())
            for job in self.jobs.values():
                if running >= self.max_running:
                    break
                if job.state() == "queued":
                    with open(job.log_path, "w", encoding="utf-8") as out:
                        job.process = subprocess.Popen([sys.executable, "-m", "tunesmith", *job.args], stdout=out,
                                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                       env=trainer_environment())
                    job.started = time.time()
                    running += 1

    def _watch(self) -> None:
        while not self._closing:
            time.sleep(1.0)
            self.start_queued()

    def stop_all(self) -> None:
        """The dashboard is closing: its training runs are interrupted (resumable), not orphaned;
        queued ones never start."""
        self._closing = True
        with self.lock:
            for job in self.jobs.values():
                if job.state() == "queued":
                    job.cancelled = True
        for job in self.jobs.values():
            if job.state() == "running":
                job.process.send_signal(signal.SIGINT)
        for job in self.jobs.values():
            if job.process is not None:
                _stop_within(job.process, STOP_GRACE)


def trainer_environment() -> dict[str, str]:
    """The environment a trainer gets: ENV_ALLOWED and ENV_PREFIXES of the dashboard's."""
    kept = {k: v for k, v in os.environ.items() if k in ENV_ALLOWED or k.startswith(ENV_PREFIXES)}
    return {**kept, "PYTHONUNBUFFERED": "1"}


def _stop_within(process: subprocess.Popen, seconds: float) -> None:
    """Wait for an interrupted process to exit; kill it if it has not within `seconds`."""
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
