"""The training loop: plain PyTorch, with `accelerate` for device placement and precision.

It knows nothing about tasks or methods: it gets a model whose trainable parameters are
already chosen, the training `Features` (batches of tensors the model's forward takes,
labels included, so the model computes its own loss) and an `evaluate(model) -> metrics`
callback.

Resumability is by construction: the batch order of every epoch is a pure function of
(seed, epoch), and a checkpoint stores the weights that train, the optimizer, the schedule,
the RNG and the position in the epoch. Replaying from a checkpoint therefore gives the same
batches, the same dropout masks, and the same final metrics as a run never interrupted.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from tunesmith.data.batching import Features, train_batches
from tunesmith.errors import TrainingDiverged, UserError
from tunesmith.io import write_text
from tunesmith.runs import history_rows
from tunesmith import track
from tunesmith.train import checkpoint
from tunesmith.train.distributed import local_share
from tunesmith.train.optim import build_optimizer, build_scheduler


@dataclass
class LoopState:
    """Where training is; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    group_in_epoch: int = 0  # next step-group (grad_accum micro-batches) to run in this epoch
    samples: int = 0
    train_seconds: float = 0.0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False


@dataclass
class FitResult:
    state: LoopState
    total_steps: int
    precision: str
    history: list[dict] = field(default_factory=list)
    processes: int = 1  # training processes (DDP under accelerate launch)


def choose_precision(requested: str) -> str:
    """accelerate's mixed_precision value for the requested precision on this machine."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        # CPU: fp32, exact everywhere. bf16 autocast (--precision bf16) depends on the CPU: on
        # one with AVX512-BF16 it trained 16% faster at the same accuracy (docs/benchmarks.md);
        # on CPUs without bf16 instructions it can be slower (not measured here).
        return "no"
    if requested == "fp16" and not cuda:
        raise UserError("--precision fp16 needs a CUDA GPU; use bf16 or fp32 on this machine")
    return {"fp32": "no"}.get(requested, requested)


@dataclass(frozen=True)
class Hooks:
    """What the loop calls besides the model. `evaluate(model) -> metrics` validates.
    `compute_loss(model, batch) -> (loss, extras)` replaces the model's own loss (DPO); its
    extras are logged in the history: floats averaged over the step, anything else (a sample
    completion) from its first micro-batch. `on_step(model,
    step, total_steps)` runs after each optimizer step, before the gradients are cleared
    (AdaLoRA's rank reallocation reads them). `evaluate_start(model) -> metrics`, when given,
    validates the model before the first step too, as a checkpoint like any other (step 0),
    so a run whose training never beats its starting point keeps that point (a callback of its
    own: a study's pruner must not see it, since every trial starts from the same point).
    `tracking` (the run's trackers, which the caller closes) sees every history row; without
    it the loop opens and closes its own. `watch(rows, epoch)`, a context manager, is entered
    around each micro-batch's forward and backward (training dynamics record which rows the
    pass was for)."""

    evaluate: Callable[[object], dict]
    compute_loss: Callable | None = None
    on_step: Callable | None = None
    evaluate_start: Callable[[object], dict] | None = None
    tracking: track.Tracking | None = None
    watch: Callable | None = None


@dataclass(frozen=True)
class Goal:
    """The validation metric that picks the best checkpoint, and its direction."""

    metric: str
    higher_better: bool = True

    def improved(self, value: float, best: float | None) -> bool:
        return best is None or (value > best if self.higher_better else value < best)


def fit(model, train: Features, cfg, run_dir: Path, hooks: Hooks, goal: Goal, resume: bool = False,
        log: Callable[[str], None] = print) -> FitResult:
    """Train `model` on `train` under `cfg` in `run_dir` (checkpoints, history.jsonl)."""
    return _Loop(model, train, cfg, run_dir, hooks, goal, log).run(resume)


class _Loop:
    """One training run's loop, its state in one place: the prepared model, optimizer and
    schedule, where it is (`state`), and where it writes."""

    def __init__(self, model, train: Features, cfg, run_dir: Path, hooks: Hooks, goal: Goal, log):
        from accelerate import Accelerator

        self.precision = choose_precision(cfg.precision)
        self.accelerator = Accelerator(mixed_precision=self.precision, cpu=not torch.cuda.is_available())
        log(f"device {self.accelerator.device}, precision {'fp32' if self.precision == 'no' else self.precision}")
        self.train, self.cfg, self.hooks, self.goal, self.log = train, cfg, hooks, goal, log
        self.total_steps, self.eval_every = schedule(len(train), cfg)
        optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, cfg.layer_decay, cfg.head_lr)
        self.scheduler = build_scheduler(optimizer, cfg.scheduler, self.total_steps, cfg.warmup_ratio)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.run_dir, self.ckpt_dir, self.history_file = run_dir, run_dir / "checkpoints", run_dir / "history.jsonl"
        self.main = self.accelerator.is_main_process  # only the main process writes the run folder
        self.state = LoopState()
        self.recent_loss: list[float] = []
        self.tracking, self.bar = hooks.tracking, None

    def run(self, resume: bool) -> FitResult:
        self.state = _starting_state(resume, self)
        self.model.train()
        self.bar = _progress_bar(self.total_steps, self.state.step, self.main)
        # The run's trackers (TensorBoard, --track ...): the caller's, or ours for this loop alone.
        own_tracking = self.tracking is None and self.main
        if own_tracking:
            self.tracking = track.Tracking(self.run_dir, self.cfg, self.log)
        if self.main:
            self.tracking.start(self.state.step if resume else None)
        try:  # the bar ends its line before any error is printed
            if self.hooks.evaluate_start is not None and self.state.step == 0 and self.state.best_metric is None:
                self._evaluate_start()
            while self.state.step < self.total_steps and not self.state.stopped_early:
                self._epoch()
        except BaseException as exc:
            if own_tracking:
                self.tracking.close(track.status_of(exc))
                own_tracking = False
            raise
        finally:
            self.bar.close()
            if own_tracking:
                self.tracking.close("finished")
        return FitResult(self.state, self.total_steps, self.precision, processes=self.accelerator.num_processes)

    def _epoch(self) -> None:
        """The rest of the current epoch (from `group_in_epoch`): a step per group of
        grad_accum micro-batches, evaluating where due."""
        state, cfg = self.state, self.cfg
        batches = train_batches(self.train.lengths, cfg.batch_size, cfg.seed, state.epoch)
        groups = [batches[i : i + cfg.grad_accum] for i in range(0, len(batches), cfg.grad_accum)]
        while state.group_in_epoch < len(groups) and state.step < self.total_steps:
            self._step(groups[state.group_in_epoch])
            end_of_epoch = state.group_in_epoch == len(groups)
            due = state.step % self.eval_every == 0 or state.step == self.total_steps
            if due or (cfg.eval_every is None and end_of_epoch):
                if end_of_epoch:  # the checkpoint must point at the start of the next epoch
                    state.epoch += 1
                    state.group_in_epoch = 0
                self._evaluate_and_checkpoint()
                if end_of_epoch:
                    return
        if state.group_in_epoch >= len(groups):
            state.epoch += 1
            state.group_in_epoch = 0

    def _step(self, group: list[list[int]]) -> None:
        """One optimizer step over `group`'s micro-batches, logged in the history."""
        state, cfg, optimizer = self.state, self.cfg, self.optimizer
        started = time.perf_counter()
        group_size = sum(len(b) for b in group)
        step_loss, extras = _accumulate(self, group, group_size)
        if cfg.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        self.scheduler.step()
        if self.hooks.on_step is not None:
            self.hooks.on_step(self.accelerator.unwrap_model(self.model), state.step, self.total_steps)
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.group_in_epoch += 1
        state.samples += group_size
        state.train_seconds += time.perf_counter() - started
        self.recent_loss.append(step_loss)
        _show_progress(self.bar, state, self.recent_loss)
        if self.main:
            self._history({"step": state.step, "epoch": state.epoch, "loss": step_loss,
                           "lr": self.scheduler.get_last_lr()[0], **extras,
                           "samples_per_second": state.samples / max(state.train_seconds, 1e-9)})

    def _history(self, row: dict) -> None:
        _append_history(self.history_file, row)
        self.tracking.row(row)

    def _evaluate_and_checkpoint(self) -> None:
        # Every process evaluates (the weights are the same everywhere), so all reach the same
        # early-stopping decision without a message; only the main one writes.
        state, cfg, metric, ckpt_dir = self.state, self.cfg, self.goal.metric, self.ckpt_dir
        plain = self.accelerator.unwrap_model(self.model)
        value = (metrics := self.hooks.evaluate(plain))[metric]
        improved = self.goal.improved(value, state.best_metric)
        _track(state, value, improved, cfg)
        if not self.main:
            return
        self._history(_validation_row(state, metrics))
        if improved:
            checkpoint.save(ckpt_dir / "best", plain, state={"step": state.step, metric: value})
        self.bar.write(f"step {state.step}: val {metric} {value:.4f}" + (" (best)" if improved else "")
                       + (" - early stopping" if state.stopped_early else ""))
        if cfg.average_last:  # keep the last k evaluations' weights for averaging at the end
            checkpoint.save(ckpt_dir / f"eval-{state.step:07d}", plain, state={"step": state.step, metric: value})
            for old in sorted(ckpt_dir.glob("eval-*"))[: -cfg.average_last]:
                shutil.rmtree(old, ignore_errors=True)
        checkpoint.save(ckpt_dir / "last", plain, self.optimizer, self.scheduler, asdict(state))

    def _evaluate_start(self) -> None:
        """Step 0: the starting model scored on validation and kept as the best so far. Where
        the head starts as the untuned baseline's probe (and the method leaves the body's
        output as it was: LoRA's B is zero), this is the baseline itself, so training must
        beat it on validation to replace it: a run never ends below where it started. No
        `last` checkpoint: a stop before the first step simply starts again."""
        plain = self.accelerator.unwrap_model(self.model)
        value = (metrics := self.hooks.evaluate_start(plain))[self.goal.metric]
        _track(self.state, value, True, self.cfg)  # the first score is the best so far
        if self.main:
            self._history(_validation_row(self.state, metrics))
            checkpoint.save(self.ckpt_dir / "best", plain, state={"step": 0, self.goal.metric: value})
            self.bar.write(f"step 0: val {self.goal.metric} {value:.4f} (the starting model)")


def schedule(examples: int, cfg) -> tuple[int, int]:
    """(optimizer steps in the run, steps between evaluations: an epoch unless eval_every)."""
    steps_per_epoch = cfg.steps_per_epoch(examples)
    total_steps = cfg.max_steps or max(1, math.ceil(steps_per_epoch * cfg.epochs))
    return total_steps, cfg.eval_every or steps_per_epoch


def _progress_bar(total_steps: int, done: int, main: bool):
    # In a terminal the bar redraws often; in a log file (CI, nohup) every redraw is a
    # line, so it updates twice a minute there.
    interactive = sys.stderr.isatty()
    return tqdm(total=total_steps, initial=done, desc="train", unit="step", dynamic_ncols=True,
                mininterval=0.5 if interactive else 30.0, disable=not main)


def _show_progress(bar, state: LoopState, recent_loss: list[float]) -> None:
    bar.update(1)
    bar.set_postfix(loss=f"{sum(recent_loss[-20:]) / len(recent_loss[-20:]):.4f}",
                    samples_s=f"{state.samples / max(state.train_seconds, 1e-9):.1f}", refresh=False)


def _starting_state(resume: bool, loop: _Loop) -> LoopState:
    """A fresh state, or (resume) the last checkpoint's, with the history logged after it dropped."""
    state = LoopState()
    if resume:
        last = checkpoint.find(loop.ckpt_dir / "last")
        if last is not None:
            state = LoopState(**checkpoint.load(last, loop.accelerator.unwrap_model(loop.model), loop.optimizer,
                                                loop.scheduler))
            loop.log(f"resumed from step {state.step} of {loop.total_steps}")
        if loop.main:
            _truncate_history(loop.history_file, state.step)
    elif loop.history_file.exists() and loop.main:
        loop.history_file.unlink()
    return state


def _accumulate(loop: _Loop, group: list[list[int]], group_size: int) -> tuple[float, dict]:
    """Forward and backward over one step's micro-batches (`group_size` examples in all); the
    gradients add up to the mean over the step's examples. Returns the step's loss and its
    averaged extras."""
    model, accelerator, compute_loss, state = loop.model, loop.accelerator, loop.hooks.compute_loss, loop.state
    step_loss, extras = 0.0, {}
    for indices in group:
        # Under DDP each process runs its share of the micro-batch (`factor` rescales
        # its loss so that the averaged gradient is the micro-batch's).
        local, factor = local_share(indices, accelerator.process_index, accelerator.num_processes)
        batch = {k: v.to(accelerator.device) for k, v in loop.train.batch(local).items()}
        with loop.hooks.watch(local, state.epoch) if loop.hooks.watch is not None else nullcontext():
            if compute_loss is None:
                loss = model(**batch).loss
            else:
                loss, batch_extras = compute_loss(model, batch)
                for key, value in batch_extras.items():
                    if isinstance(value, float):
                        extras[key] = extras.get(key, 0.0) + value * len(indices) / group_size
                    else:  # a sample (GRPO's completion): the step's first
                        extras.setdefault(key, value)
        if not torch.isfinite(loss):  # (the bar is closed on the way out)
            raise TrainingDiverged(
                f"loss became {loss.item()} at step {state.step + 1}; the last good checkpoint is kept in "
                f"{loop.ckpt_dir}; lower --lr (now {loop.cfg.lr:g}) or set --max-grad-norm"
            )
        # Weight each micro-batch by its share of the step's examples: the
        # gradient is then exactly the mean over the step, however it is cut.
        if loss.requires_grad:  # a micro-batch with nothing to learn (answers cut at max_length) adds no gradient
            accelerator.backward(loss * (len(indices) / group_size) * factor)
        step_loss += loss.item() * len(indices) / group_size * factor / accelerator.num_processes
    if accelerator.num_processes > 1:  # the step's loss over all processes' shares
        step_loss = accelerator.reduce(torch.tensor(step_loss, device=accelerator.device), "sum").item()
    return step_loss, extras


def _validation_row(state: LoopState, metrics: dict) -> dict:
    """A validation result as the history logs it."""
    scores = {f"val_{k}": v for k, v in metrics.items() if isinstance(v, float)}
    return {"step": state.step, "epoch": state.epoch, **scores}


def _track(state: LoopState, value: float, improved: bool, cfg) -> None:
    if improved:
        state.best_metric, state.best_step = value, state.step
        state.evals_without_improvement = 0
    else:
        state.evals_without_improvement += 1
        if cfg.early_stopping and state.evals_without_improvement >= cfg.early_stopping:
            state.stopped_early = True


def _append_history(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_history(path: Path, step: int) -> None:
    """On resume, drop history logged after the checkpoint: those steps run again."""
    if not path.exists():
        return
    kept = [row for row in history_rows(path.read_text(encoding="utf-8")) if row["step"] <= step]
    write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
