"""What a run costs to predict with: the cost table every compressed run reports against its source.

One measurement is one fresh process (`python -m tunesmith.compress.costs RUN`), so the peak
memory it reports is that model's alone (a process's peak resident memory never goes down:
measured in the process that also held the source model, the compressed one would inherit its
peak). Several runs (a source and its compressed copy) are measured by processes started
together: their imports and model loading overlap, which is most of a small model's time, but
each waits until the one before it has finished before it times anything, so no two timings
share the CPU. On the run's own test split it measures:

- size_mb: the files the backend loads (weights, graph, tokenizer), in MB (10^6 bytes);
- peak_memory_mb: the measuring process's peak resident memory (loading + predicting); the
  interpreter with PyTorch and transformers imported is about 500 MB of it, for any model;
- latency_p50_ms / latency_p95_ms: one text per call, as a client of `serve` sends it;
- batch32_per_s: texts per second in calls of 32 texts in file order (a server's micro-batch);
- file_per_s: texts per second over the whole split in one call (sorted by length: `predict`);
- the task's test metrics, so the table can show what compression cost in quality.

Threads are PyTorch's default (one per core) for both backends, as `predict` and `serve` run.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

LATENCY_CALLS = 200  # single-text calls timed; p95 over 200 is stable to a few percent on an idle machine
WARMUP_CALLS = 5  # the first calls pay for thread pools, allocations and ONNX Runtime's first plan
COLUMNS = (("size_mb", "size MB", "{:.1f}"), ("peak_memory_mb", "peak memory MB", "{:.0f}"),
           ("latency_p50_ms", "p50 ms (1 text)", "{:.1f}"), ("latency_p95_ms", "p95 ms (1 text)", "{:.1f}"),
           ("batch32_per_s", "texts/s (batch 32)", "{:.0f}"), ("file_per_s", "texts/s (whole file, sorted)", "{:.0f}"))


def model_files(run, backend: str) -> list[Path]:
    """The files of `run`'s model folder that `backend` loads: an ONNX run does not read the
    safetensors weights, a torch run does not read an ONNX export."""
    files = [f for f in run.model_dir.rglob("*") if f.is_file()]
    if backend == "onnx":
        return [f for f in files if f.suffix != ".safetensors"]
    return [f for f in files if f.suffix != ".onnx"]


def measure_here(run, backend: str = "auto", loaded=lambda: None) -> dict:
    """The measurement itself, in this process (`measure` runs it in a fresh one); `loaded` is
    called once the model is loaded, before anything is timed."""
    from tunesmith.inference import Predictor, resolve_backend

    backend = resolve_backend(run, backend)
    predictor = Predictor.from_run(run, backend)
    task = predictor.task
    test = run.split("test")
    texts, labels = test.texts, test.labels
    loaded()
    for text in texts[:WARMUP_CALLS]:
        predictor.predict([text])
    latencies = []
    for text in texts[:LATENCY_CALLS]:
        started = time.perf_counter()
        predictor.predict([text])
        latencies.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    for i in range(0, len(texts), 32):
        predictor.predict(texts[i:i + 32])
    batch32 = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    outputs = predictor.predict(texts)
    whole = len(texts) / (time.perf_counter() - started)
    metrics = task.metrics(labels, outputs, predictor.labels)
    return {
        "backend": backend,
        "size_mb": round(sum(f.stat().st_size for f in model_files(run, backend)) / 1e6, 2),
        "peak_memory_mb": round(peak_resident_mb(), 1),
        "latency_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(latencies, 95)), 2),
        "batch32_per_s": round(batch32, 1),
        "file_per_s": round(whole, 1),
        "texts": len(texts),
        "metrics": metrics,
    }


def peak_resident_mb() -> float:
    """This process image's peak resident memory. Linux's VmHWM, not ru_maxrss: a process
    started by fork + exec keeps its parent's ru_maxrss at the fork (the parent held the
    source model), while VmHWM counts only memory this program touched."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: KiB on Linux, the best left


READY, GO = "loaded", "go"  # the lines a measuring process and its parent exchange


def measure(run_paths: list[Path], backend: str = "auto") -> list[dict]:
    """`measure_here` for each run, each in a fresh Python process (peak memory is that model's
    alone). The processes start together and load in parallel; then each in turn is told to go
    and times its model while the others wait, idle, for their turn."""
    # stderr goes to files, not pipes: a process writing many warnings while it waits for its
    # turn would otherwise fill a pipe nobody reads yet, and block.
    errors = [tempfile.TemporaryFile(mode="w+", encoding="utf-8") for _ in run_paths]
    processes = [subprocess.Popen([sys.executable, "-m", "tunesmith.compress.costs", str(path), backend, "--wait"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=error, text=True)
                 for path, error in zip(run_paths, errors)]
    try:
        for path, process, error in zip(run_paths, processes, errors):  # all loaded before the first timing
            if not _loaded(process):
                _failed(path, process, error)
        results = []
        for path, process, error in zip(run_paths, processes, errors):
            # Nothing was read past READY: the process writes no more until it is told to go.
            out, _ = process.communicate(GO + "\n")
            if process.returncode != 0:
                _failed(path, process, error)
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for process, error in zip(processes, errors):
            if process.poll() is None:
                process.kill()
                process.wait()
            error.close()


def _loaded(process: subprocess.Popen) -> bool:
    """Read the process's output up to its READY line (a library may print before it)."""
    for line in process.stdout:
        if line.strip() == READY:
            return True
    return False  # it exited first


def _failed(path: Path, process: subprocess.Popen, error) -> None:
    from tunesmith.errors import UserError

    if process.poll() is None:
        process.kill()
    process.wait()
    error.seek(0)
    reason = (error.read().strip().splitlines() or ["no output"])[-1]
    raise UserError(f"{path}: measuring prediction costs failed ({reason})")


def table(named: list[tuple[str, dict]], metric: str) -> str:
    """The cost table as Markdown: one row per (name, measurement); with two models, a last
    row with the second's change against the first (ratios, and the metric's difference)."""
    header = ["model", "backend", *(title for _, title, _ in COLUMNS), f"test {metric}"]
    rows = []
    for name, costs in named:
        value = costs["metrics"].get(metric)  # float metrics only (lineage.finish keeps those)
        rows.append([name, costs["backend"], *(fmt.format(costs[key]) for key, _, fmt in COLUMNS),
                     f"{value:.4f}" if value is not None else "-"])
    if len(named) == 2:
        (_, source), (_, compressed) = named
        change = ["change", ""]
        for key, _, _ in COLUMNS:
            change.append(f"{compressed[key] / source[key]:.2f}x" if source[key] else "-")
        a, b = source["metrics"].get(metric), compressed["metrics"].get(metric)
        change.append(f"{b - a:+.4f}" if a is not None and b is not None else "-")
        rows.append(change)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _wait_for_go() -> None:
    print(READY, flush=True)
    if sys.stdin.readline().strip() != GO:  # the parent went away: nothing to report to
        raise SystemExit(1)


if __name__ == "__main__":  # python -m tunesmith.compress.costs RUN [BACKEND] [--wait]
    from tunesmith.runs import Run

    arguments = [a for a in sys.argv[1:] if a != "--wait"]
    loaded = _wait_for_go if "--wait" in sys.argv else (lambda: None)
    print(json.dumps(measure_here(Run(Path(arguments[0])), arguments[1] if len(arguments) > 1 else "auto", loaded)))
