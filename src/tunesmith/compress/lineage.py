"""A compressed run: a new run folder made from a finished one, that every verb takes as a run.

`quantize`, `prune` and `distill` each write one. It keeps its source's config.yaml, labels and
exact splits (so `eval` rescores the same held-out test rows), holds its own `model/`, and adds
`compression.json`:

    {"kind": "quantize", "settings": {...}, "source": "/abs/path/of/source",
     "backend": "onnx" | "torch",       # what `--backend auto` runs it on
     "torch_int8": false,                # int8 made at load time (quantize --backend torch)
     "lineage": [{"kind": "distill", "source": ..., "settings": ...}, {"kind": "quantize", ...}],
     "costs": {"source": {...}, "compressed": {...}}}   # compress/costs.py, measured together

`lineage` is every step from the trained run to this one, so a chain (distil, then quantise)
says where it came from. The folder is built under a hidden temporary name and renamed when
it is complete: an interrupted compression leaves no half-made run behind. `distill` and
`prune` train, so theirs (`training`) keeps its checkpoints when stopped by Ctrl-C or a kill,
and the same command continues from the last one.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tunesmith.errors import UserError
from tunesmith.io import atomic_dir, exclusive, read_json, replace_dir, write_json
from tunesmith.runs import Run
from tunesmith.train import checkpoint


def target_folder(source: Run, kind: str, name: str | None, output: str | None) -> Path:
    """Where the new run goes (beside its source by default, named after it), refused now if taken."""
    target = Path(output) if output else source.path.parent
    target = target / (name or f"{source.path.name}-{kind}")
    if target.exists():
        raise UserError(f"{target}: already exists; choose another --name")
    return target


@contextmanager
def building(target: Path) -> Iterator[Run]:
    """A run folder under a temporary name (io.atomic_dir), in place as `target` only if the
    block succeeds."""
    with _one_writer(target), atomic_dir(target) as tmp:
        yield Run(tmp)


@contextmanager
def training(target: Path, identity: dict, log) -> Iterator[tuple[Run, bool]]:
    """(run, resuming) for a compression that trains: built in `.NAME.partial` beside `target`
    and renamed to `target` when the block succeeds. Ctrl-C (or a kill, which runs no code)
    leaves the partial folder with its checkpoints; the next call with the same `identity`
    (source and settings) resumes it, a call with other settings starts over. Any other error
    removes it: a crash's cause is not something to resume into."""
    with _one_writer(target):  # the partial folder is shared by whoever builds `target`
        yield from _training(target, identity, log)


def _one_writer(target: Path):
    return exclusive(target.with_name(f".{target.name}.lock"),
                     f"{target}: another process is writing it now (process {{holder}}); wait for it to finish")


def _training(target: Path, identity: dict, log):
    partial = target.with_name(f".{target.name}.partial")
    marker = partial / "building.json"
    resuming = (marker.is_file() and read_json(marker) == identity
                and checkpoint.find(partial / "checkpoints" / "last") is not None)
    if not resuming:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_json(marker, identity)
    try:
        yield Run(partial), resuming
    except KeyboardInterrupt:
        log(f"interrupted: {partial} keeps the checkpoints; the same command continues from the last one")
        raise
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    marker.unlink()
    replace_dir(partial, target)


def copy_run_files(source: Run, run: Run, model: bool = True) -> None:
    """The source's config, labels and splits (and its model folder, without an ONNX export)."""
    shutil.copy2(source.config_file, run.config_file)
    shutil.copy2(source.labels_file, run.labels_file)
    shutil.copytree(source.data_dir, run.data_dir)
    if model:
        shutil.copytree(source.model_dir, run.model_dir, ignore=shutil.ignore_patterns("*.onnx"))


def record(run: Run, source: Run, kind: str, settings: dict, backend: str = "torch", torch_int8: bool = False) -> dict:
    """Write compression.json (before the costs: the backend it names is how the run loads)."""
    earlier = source.compression()
    step = {"kind": kind, "source": str(source.path.resolve()), "settings": settings}
    facts = {**step, "backend": backend, "torch_int8": torch_int8,
             "lineage": (earlier["lineage"] if earlier else []) + [step]}
    write_json(run.compression_file, facts)
    return facts


def refuse_int8_source(source: Run, verb: str) -> None:
    """Quantisation is the last link of a chain: an int8 model is not trained or quantised again."""
    facts = source.compression() or {}
    if facts.get("backend") == "onnx" or facts.get("torch_int8"):
        raise UserError(f"{verb}: {source.path} is already quantised to int8; {verb} its source run "
                        f"({facts.get('source')}) instead, and quantise last")



def finish(run: Run, source: Run, log=print) -> dict:
    """Measure the new run and its source together (compress/costs.py), then write the
    metrics (with the cost table) and the report; metrics.json last, as for every run."""
    from tunesmith import cards
    from tunesmith.compress import costs
    from tunesmith.evaluate import report
    from tunesmith.io import write_text

    metric = run.settings().resolved_metric()
    log("measuring the source and the compressed model on the test split (size, memory, latency, throughput) ...")
    measured = dict(zip(("source", "compressed"), costs.measure([source.path, run.path])))
    test = measured["compressed"]["metrics"]  # everything the task reports (per class, confusion matrix)
    for side in measured.values():  # the cost table keeps the headline numbers
        side["metrics"] = {k: v for k, v in side["metrics"].items() if isinstance(v, float)}
    facts = {**run.compression(), "costs": measured}
    write_json(run.compression_file, facts)
    metrics = {"test": test,
               "baseline": read_json(source.metrics_file).get("baseline"),
               "compression": {"kind": facts["kind"], "source": facts["source"], "lineage": facts["lineage"],
                               "table": costs.table([("source", measured["source"]), ("compressed", measured["compressed"])],
                                                    metric)},
               "peak_memory_mb": measured["compressed"]["peak_memory_mb"]}
    write_text(run.report_file, report.render(f"tunesmith {facts['kind']} {run.path.name}", run.config(), metrics,
                                              run.history(), run.labels()))
    write_json(run.metrics_file, metrics)  # last: its presence marks the run finished
    cards.write(run)  # model/README.md, with the compressed model's own scores
    log(metrics["compression"]["table"])
    return metrics
