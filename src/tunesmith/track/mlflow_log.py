"""MLflow (`--track mlflow`): params, metrics per step, and at the end the test metrics, the
resolved config, the report and the model folder as artifacts, one MLflow run per tunesmith run.

Where to: `--tracking-uri` (an `http://` tracking server, a database URL, ...), else the
MLFLOW_TRACKING_URI environment variable, else a local SQLite store beside the runs
(`runs/mlflow.db`, artifacts in `runs/mlartifacts/`): MLflow 3 made SQLite its default store and put
the old `./mlruns` file store in maintenance mode, so the local default follows it.
`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows it.

The MLflow run's id is kept in RUN/tracking.json, so `train --resume` continues the same MLflow
run. Steps between the checkpoint and the stop are trained again after a resume; MLflow cannot
delete points, so those steps are not sent a second time (each step has one point per metric).
A `tune` study is an MLflow run of its own with its trials as children (`--tracking-parent`, set
by tune). Metrics are sent in batches (MLflow takes up to 1,000 per call), not one call per step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tunesmith.track import flat_settings, register, remember, result_scalars, scalars, stored_ids

FLUSH_ROWS = 200  # metric points held before a batch is sent ...
FLUSH_SECONDS = 10.0  # ... or after this long, so a server's charts stay live
STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}


def tracking_uri(cfg, runs_folder: Path) -> str:
    """The store: --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite in the runs folder. A
    run read back from its config.yaml has the URI without its password (`***`): the secret
    comes from MLFLOW_TRACKING_URI, when that names the same store."""
    from tunesmith.databases import redacted
    from tunesmith.errors import UserError

    given, env = cfg.tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")
    if given and "***" in given:
        if env and redacted(env) == given:
            return env
        raise UserError(f"--tracking-uri {given}: the run keeps this URI without its secret; set MLFLOW_TRACKING_URI "
                        "to the whole URI (with the password) to log to it")
    return given or env or f"sqlite:///{runs_folder.resolve() / 'mlflow.db'}"


def client_and_experiment(cfg, runs_folder: Path):
    """(MlflowClient, experiment id) for the config's tracking URI and experiment name."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg, runs_folder)
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(cfg.experiment)
    if found is not None:
        return client, found.experiment_id
    # A local store keeps its artifacts beside the runs; a server chooses its own artifact root.
    local = uri.startswith("sqlite:///") and not cfg.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI")
    location = (runs_folder.resolve() / "mlartifacts").as_uri() if local else None
    return client, client.create_experiment(cfg.experiment, artifact_location=location)


def parent_run(cfg, study_folder: Path, runs_folder: Path, study_name: str) -> str:
    """The MLflow run of a `tune` study (its trials are its children), created once per study."""
    from mlflow.entities import RunStatus

    known = stored_ids(study_folder).get("mlflow_run_id")
    client, experiment = client_and_experiment(cfg, runs_folder)
    if known:
        client.update_run(known, status=RunStatus.to_string(RunStatus.RUNNING))
        return known
    run = client.create_run(experiment, run_name=study_name, tags={"tunesmith.kind": "study"})
    remember(study_folder, "mlflow_run_id", run.info.run_id)
    return run.info.run_id


def end_parent_run(cfg, study_folder: Path, runs_folder: Path, status: str, best: dict | None = None) -> None:
    known = stored_ids(study_folder).get("mlflow_run_id")
    if not known:
        return
    client, _ = client_and_experiment(cfg, runs_folder)
    if best:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(known, metrics=[Metric(f"best/{k}", float(v), now, 0) for k, v in best.items()
                                         if isinstance(v, (int, float))])
    client.set_terminated(known, status=STATUS[status])


@register("mlflow")
class MlflowLog:
    package, extra = "mlflow", "track"

    def __init__(self, run_dir: Path, cfg):
        import mlflow  # noqa: F401  (checked up front by track.check; ImportError here drops the tracker)

        self.run_dir, self.cfg = Path(run_dir), cfg
        self.client = self.run_id = None
        self.pending: list = []
        self.last_flush = time.monotonic()
        self.sent_through = -1  # after a resume: the last step MLflow already holds

    def start(self, resume_step: int | None) -> None:
        from mlflow.entities import Param, RunStatus

        self.client, experiment = client_and_experiment(self.cfg, self.run_dir.parent)
        self.run_id = stored_ids(self.run_dir).get("mlflow_run_id")
        if self.run_id:  # a resumed run continues its MLflow run
            self.client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            self.sent_through = max((m.step for m in self.client.get_metric_history(self.run_id, "train/loss")),
                                    default=-1)
            return
        tags = {"tunesmith.task": self.cfg.task, "tunesmith.method": self.cfg.method,
                "tunesmith.run_dir": str(self.run_dir.resolve())}
        if self.cfg.tracking_parent:
            tags["mlflow.parentRunId"] = self.cfg.tracking_parent
        run = self.client.create_run(experiment, run_name=self.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        remember(self.run_dir, "mlflow_run_id", self.run_id)
        from tunesmith.config import config_to_yaml_dict

        params = [Param(k, str(v)[:6000]) for k, v in flat_settings(config_to_yaml_dict(self.cfg)).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per call
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def row(self, row: dict) -> None:
        from mlflow.entities import Metric

        now, step = int(time.time() * 1000), int(row["step"])
        if step <= self.sent_through:
            return
        self.pending.extend(Metric(name, value, now, step) for name, value in scalars(row).items())
        if len(self.pending) >= FLUSH_ROWS or time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[:1000], self.pending[1000:]
            self.client.log_batch(self.run_id, metrics=batch)
        self.last_flush = time.monotonic()

    def finish(self, settings: dict, metrics: dict, run_dir: Path) -> None:
        from mlflow.entities import Metric

        self.flush()
        now = int(time.time() * 1000)
        scores = [Metric(name, float(value), now, 0) for name, value in result_scalars(metrics).items()]
        if scores:
            self.client.log_batch(self.run_id, metrics=scores)
        for name in ("config.yaml", "labels.json", "report.html", "baseline.json"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))
        if (run_dir / "model").is_dir():
            self.client.log_artifacts(self.run_id, str(run_dir / "model"), artifact_path="model")

    def close(self, status: str) -> None:
        if self.run_id is None:
            return
        self.flush()
        self.client.set_terminated(self.run_id, status=STATUS[status])
