"""Experiment tracking: where a run's curves and results go besides its own folder.

A tracker is a plug-in registered by name (`@register("mlflow")`), like tasks and methods. A run
feeds all of its trackers together through `Tracking`, in this order:

    start(resume_step)   the loop starts (or resumes after its checkpoint at resume_step)
    row(row)             every history row: loss, lr, samples/s, extras, val_* metrics
    finish(settings, metrics, run_dir)
                         the run is done: its settings, test metrics, report and model folder
    close(status)        "finished", "failed" or "interrupted" (always called, also after a crash)

TensorBoard is on for every run (`--no-tensorboard` turns it off); `--track mlflow,wandb` adds
the others. A tracker that cannot reach its service warns once and stops logging: a tracking
outage never stops a run (its own folder keeps everything).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

from tunesmith.errors import UserError
from tunesmith.io import read_json, write_json

STATE_FILE = "tracking.json"  # RUN/tracking.json: each tracker's id for this run, so a resume continues it


class Tracker(Protocol):
    package: str | None  # the package it needs (None: a core dependency), refused up front when missing
    extra: str | None  # the tunesmith extra that installs it

    def start(self, resume_step: int | None) -> None: ...

    def row(self, row: dict) -> None: ...

    def finish(self, settings: dict, metrics: dict, run_dir: Path) -> None: ...

    def close(self, status: str) -> None: ...


TRACKERS: dict[str, Callable[..., Tracker]] = {}


def register(name: str):
    """Register a tracker factory `factory(run_dir: Path, cfg) -> Tracker` under `--track NAME`."""
    def decorate(factory):
        TRACKERS[name] = factory
        return factory
    return decorate


def names(cfg) -> list[str]:
    """The trackers a config asks for: TensorBoard unless --no-tensorboard, then --track's."""
    return (["tensorboard"] if cfg.tensorboard else []) + [n for n in cfg.track if n != "tensorboard"]


def check(cfg) -> None:
    """Refuse --track NAME whose package is missing before any data or model is loaded."""
    import importlib.util

    for name in cfg.track:
        package, extra = TRACKERS[name].package, TRACKERS[name].extra
        if package and importlib.util.find_spec(package) is None:
            raise UserError(f"--track {name}: the {package} package is not installed; "
                            f"pip install 'tunesmith[{extra}]', or leave {name} out of --track")


def scalars(row: dict) -> dict[str, float]:
    """A history row as the trackers' scalar names: val_<metric> -> val/<metric>, the rest
    (loss, lr, samples_per_second, the loss's extras) -> train/<key>; step and epoch are the axes."""
    return {(f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"): float(value)
            for key, value in row.items()
            if key not in ("step", "epoch") and isinstance(value, (int, float)) and not isinstance(value, bool)}


def result_scalars(metrics: dict) -> dict[str, float]:
    """A finished run's test and baseline numbers as test/<metric> and baseline/<metric>."""
    return {f"{split}/{key}": value for split in ("test", "baseline") for key, value in (metrics.get(split) or {}).items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def stored_ids(folder: Path) -> dict:
    """FOLDER/tracking.json: the ids trackers gave this run (or study), so a resume continues them."""
    path = folder / STATE_FILE
    return read_json(path) if path.is_file() else {}


def remember(folder: Path, key: str, value: str) -> None:
    write_json(folder / STATE_FILE, {**stored_ids(folder), key: value})


class Tracking:
    """All of a run's trackers, fed together. One that fails is dropped with one warning."""

    def __init__(self, run_dir: Path, cfg, log=print):
        self.run_dir, self.log = Path(run_dir), log
        self.trackers: dict[str, Tracker] = {}
        self.started = False
        for name in names(cfg):
            self._call(name, lambda n=name: self.trackers.__setitem__(n, TRACKERS[n](self.run_dir, cfg)))

    def _call(self, name: str, action) -> None:
        try:
            action()
        except ImportError:
            self.trackers.pop(name, None)  # tensorboardX missing: the run goes on without it
        except Exception as exc:  # a tracking service down must not stop training
            self.trackers.pop(name, None)
            self.log(f"warning: tracking to {name} stopped: {type(exc).__name__}: {str(exc)[:200]}")

    def _each(self, method: str, *args) -> None:
        for name, tracker in list(self.trackers.items()):
            self._call(name, lambda t=tracker: getattr(t, method)(*args))

    def start(self, resume_step: int | None = None) -> None:
        if not self.started:
            self.started = True
            self._each("start", resume_step)

    def row(self, row: dict) -> None:
        self._each("row", row)

    def finish(self, settings: dict, metrics: dict) -> None:
        self.start()  # a run that never trained (zero-shot) still reports its results
        self._each("finish", settings, metrics, self.run_dir)

    def close(self, status: str) -> None:
        if self.started:
            self._each("close", status)
        self.trackers.clear()


def status_of(exc: BaseException | None) -> str:
    """How a run ended, for close(): finished, interrupted (Ctrl-C, a signal) or failed."""
    from tunesmith.errors import Interrupted

    if exc is None:
        return "finished"
    return "interrupted" if isinstance(exc, (KeyboardInterrupt, Interrupted, SystemExit)) else "failed"


def flat_settings(settings: dict) -> dict[str, str | int | float | bool]:
    """A run's settings as flat scalars (lists and mappings as text), for params and hparams."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, (bool, int, float, str)):
            flat[key] = value
        elif value is not None:
            flat[key] = str(value)
    return flat


def register_builtin() -> None:
    from tunesmith.track import mlflow_log, tensorboard_log, wandb_log  # noqa: F401  (they register)


register_builtin()
