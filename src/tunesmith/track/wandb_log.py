"""Weights & Biases (`--track wandb`, pip install 'tunesmith[wandb]'): the same rows, settings
and test metrics as the other trackers, into a W&B run named after the run folder, in the project
`--experiment`. Without an account, WANDB_MODE=offline keeps everything in RUN/wandb/ for a
later `wandb sync`. The W&B run id is kept in RUN/tracking.json, so `train --resume` continues
the same W&B run; a `tune` study's trials share a group (its --tracking-parent).
"""

from __future__ import annotations

from pathlib import Path

from tunesmith.track import flat_settings, register, remember, result_scalars, scalars, stored_ids

EXIT_CODES = {"finished": 0, "failed": 1, "interrupted": 130}


@register("wandb")
class WandbLog:
    package, extra = "wandb", "wandb"

    def __init__(self, run_dir: Path, cfg):
        import wandb  # noqa: F401

        self.run_dir, self.cfg, self.run = Path(run_dir), cfg, None

    def start(self, resume_step: int | None) -> None:
        import wandb

        from tunesmith.config import config_to_yaml_dict

        known = stored_ids(self.run_dir).get("wandb_run_id")
        self.run = wandb.init(project=self.cfg.experiment, name=self.run_dir.name, id=known,
                              resume="allow", dir=str(self.run_dir), group=self.cfg.tracking_parent,
                              config=flat_settings(config_to_yaml_dict(self.cfg)), reinit="create_new",
                              settings=wandb.Settings(console="off"))  # the console is not shipped anywhere
        if not known:
            remember(self.run_dir, "wandb_run_id", self.run.id)

    def row(self, row: dict) -> None:
        self.run.log(scalars(row), step=int(row["step"]))

    def finish(self, settings: dict, metrics: dict, run_dir: Path) -> None:
        self.run.summary.update(result_scalars(metrics))

    def close(self, status: str) -> None:
        self.run.finish(exit_code=EXIT_CODES[status])
