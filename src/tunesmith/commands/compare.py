"""`tunesmith compare DATA --methods full,lora,bitfit,...`: the same data, splits and settings,
one run per method, and one table and chart: test metric, trainable %, train time, peak memory.

Each method trains in its own process (`tunesmith train` on a config written into the compare
folder), so its peak memory is its own and one method's failure is reported, not fatal. The
runs stay in `<folder>/runs/` for `eval`, `predict` and `serve`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.config import TrainConfig, build_config, read_yaml_mapping
from tunesmith.errors import UserError
from tunesmith.io import write_json, write_text, write_yaml


class CompareArgs(BaseModel):
    """`tunesmith compare DATA --methods A,B` or `--runs A,B` (the training flags go in `training`)."""

    data: Optional[str] = Field(None, description="training data, as for train --data",
                                json_schema_extra=positional())
    runs: Optional[list[str]] = Field(None, description="finished runs of the same splits (a model and its quantised, "
                                      "pruned or distilled copies): size, peak memory, p50/p95 latency, texts/s at "
                                      "batch 32 and on the whole test file, metric")
    methods: Optional[list[str]] = Field(None, description="methods to compare, e.g. full,lora,ia3,bitfit,freeze (or "
                                         "a `methods:` list in --config)")
    config: Optional[str] = Field(None, description="YAML config shared by every method; flags override it")
    output_folder: str = Field("runs/compare", description="folder for the table, chart and runs")
    training: dict = Field({}, description="training settings given as flags", json_schema_extra={"hidden": True})


def main(args: CompareArgs) -> None:
    """The verb: methods trained on the same splits, or finished runs measured side by side."""
    if args.runs:  # finished runs measured side by side (a model and its compressed copies)
        compare_runs(args.runs, args.output_folder if args.output_folder != "runs/compare" else None)
        return
    if not args.data:
        raise UserError("compare: give training DATA and --methods, or --runs A,B of finished runs")
    values = read_yaml_mapping(args.config) if args.config else {}
    listed = values.pop("methods", None)  # the config may list the methods itself
    methods = args.methods or listed
    if not methods or not isinstance(methods, list):
        raise UserError("compare: give --methods full,lora,... or a `methods:` list in --config")
    compare({**values, **args.training, "data": args.data}, [str(m) for m in methods], args.output_folder)


def compare(values: dict, methods: list[str], folder: str, out=print) -> list[dict]:
    if not methods:
        raise UserError("--methods: give at least one method, like full,lora,bitfit")
    target = Path(folder)
    if target.exists():
        raise UserError(f"{target}: already exists; choose another --output-folder")
    configs = {}
    for method in methods:  # every config is checked before anything trains
        cfg = build_config({**values, "method": method, "output": str(target / "runs"), "name": method}, f"--methods {method}")
        configs[method] = cfg
    target.mkdir(parents=True)
    rows = []
    for method, cfg in configs.items():
        config_file = target / "configs" / f"{method}.yaml"
        # The settings as given: the subprocess's `train` resolves the rest from the data, as
        # `tunesmith train --method M` would (a learning rate that follows the run's length).
        write_yaml(config_file, {key: value for key, value in cfg.model_dump().items() if value is not None})
        out(f"[{method}] training ...")
        done = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(config_file)],
                              capture_output=True, text=True)
        metrics_file = target / "runs" / method / "metrics.json"
        if done.returncode != 0 or not metrics_file.is_file():
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            out(f"[{method}] failed: {reason}")
            rows.append({"method": method, "error": reason})
            continue
        rows.append(_row(method, cfg, json.loads(metrics_file.read_text())))
        out(f"[{method}] {rows[-1]['metric']} {rows[-1]['value']:.4f}")
    write_json(target / "compare.json", rows)
    write_text(target / "compare.md", table(rows))
    chart(rows, target / "compare.png")
    out(table(rows))
    out(f"wrote {target / 'compare.md'} and {target / 'compare.png'}")
    return rows


def compare_runs(paths: list[str], folder: str | None = None, out=print) -> list[dict]:
    """Finished runs side by side (a model and its quantised, pruned or distilled copies): the
    cost columns of compress/costs.py and the test metric, each run measured in a fresh process
    on the same test split."""
    from tunesmith.compress import costs
    from tunesmith.runs import open_finished

    if len(paths) < 2:
        raise UserError("--runs: give at least two run folders, like runs/a,runs/a-int8")
    runs = [open_finished(path) for path in paths]
    tests = {run.path: (run.data_dir / "test.jsonl").read_bytes() for run in runs}
    first = runs[0]
    for run in runs[1:]:
        if tests[run.path] != tests[first.path]:
            raise UserError(f"--runs: {run.path} was tested on other rows than {first.path}; compare runs of the same "
                            "splits (a run and its compressed copies, or one `compare` folder)")
    metric = first.settings().resolved_metric()
    out(f"measuring {', '.join(run.path.name for run in runs)} (each in a process of its own, one at a time) ...")
    measured = costs.measure([run.path for run in runs])
    rows = [{"run": str(run.path), **one} for run, one in zip(runs, measured)]
    text = costs.table([(Path(r["run"]).name, r) for r in rows], metric)
    if folder:
        target = Path(folder)
        write_json(target / "compare-runs.json", rows)
        write_text(target / "compare-runs.md", text)
    out(text)
    return rows


def _row(method: str, cfg: TrainConfig, metrics: dict) -> dict:
    metric = cfg.resolved_metric()
    return {"method": method, "metric": metric, "value": metrics["test"][metric],
            "trainable_pct": metrics["parameters"]["trainable_pct"], "trainable": metrics["parameters"]["trainable"],
            "train_seconds": metrics["training"]["train_seconds"], "peak_memory_mb": metrics["peak_memory_mb"],
            "run": str(Path(cfg.output) / method)}


def table(rows: list[dict]) -> str:
    done = [r for r in rows if "error" not in r]
    metric = done[0]["metric"] if done else "metric"
    lines = [f"| method | test {metric} | trainable % | train s | peak memory MB |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | failed: {r['error']} | | | |")
        else:
            lines.append(f"| {r['method']} | {r['value']:.4f} | {r['trainable_pct']:.2f} | {r['train_seconds']:.0f} | "
                         f"{r['peak_memory_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if "error" not in r]
    if not done:
        return
    names = [r["method"] for r in done]
    panels = [(f"test {done[0]['metric']}", "value"), ("trainable %", "trainable_pct"), ("train s", "train_seconds"),
              ("peak memory MB", "peak_memory_mb")]
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2))
    for ax, (title, key) in zip(axes, panels):
        ax.bar(names, [r[key] for r in done])
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
