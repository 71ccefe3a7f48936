"""`tunesmith distill RUN --student-layers 3` and `tunesmith prune RUN --sparsity 0.3`: a smaller
model trained against the run's own, as a new run folder with a cost table.

distill: the student keeps `--student-layers` of the teacher's layers, evenly spread
(compress/student.py), and is trained on the soft and hard losses (compress/distill.py).
prune: the model keeps its layers but loses `--sparsity` of its feed-forward neurons (and
`--drop-layers` whole layers), the least important first, then recovers with the same
training, against the unpruned model. Both read the run's own splits: training texts teach,
validation picks the checkpoint, the test split is scored once at the end.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.compress import lineage
from tunesmith.errors import UserError
from tunesmith.methods import count_parameters
from tunesmith.runs import open_finished

DISTILL_EPOCHS = 3.0  # a student starting from the teacher's own layers settles in a few passes
DISTILL_LR = 1e-4  # twice full fine-tuning's 5e-5: the student has to move further than a fine-tune does
PRUNE_EPOCHS = 1.0  # recovery only: the pruned model starts close to the source
CALIBRATION_ROWS = 256  # training texts that rank neurons and layers


class StudentArgs(BaseModel):
    """What distill and prune share: how the smaller model trains, and where it goes."""

    run: str = Field(description="finished run folder: the teacher", json_schema_extra=positional())
    epochs: Optional[float] = Field(None, gt=0, description=f"passes over the training texts (default: "
                                    f"{DISTILL_EPOCHS:g} for distill, {PRUNE_EPOCHS:g} for prune's recovery)")
    lr: Optional[float] = Field(None, gt=0, description=f"learning rate (default: {DISTILL_LR:g})")
    temperature: float = Field(2.0, gt=0, description="softens teacher and student distributions in the soft loss")
    alpha: float = Field(0.5, ge=0, le=1, description="the soft (teacher) loss's share; the rest is cross-entropy "
                         "on true labels")
    hidden_weight: float = Field(0.0, ge=0, description="weight of a third loss: each student layer's output "
                                 "against the teacher layer it was copied from (relative squared error over real "
                                 "tokens; one teacher pass per step); 0: off")
    name: Optional[str] = Field(None, description="name of the new run folder (default: <run>-<N>layers, "
                                "<run>-pruned)")
    output: Optional[str] = Field(None, description="folder for the new run (default: beside the source run)")

    def lesson(self):
        from tunesmith.compress.distill import Lesson

        return Lesson(self.temperature, self.alpha, self.hidden_weight)


class DistillArgs(StudentArgs):
    """`tunesmith distill RUN`."""

    student_layers: int = Field(3, gt=0, description="layers the student keeps, evenly spread over the teacher's")
    unlabeled: Optional[str] = Field(None, description="a file of extra texts (same formats as predict) that the "
                                     "teacher labels")
    augment_copies: int = Field(0, ge=0, description="edited copies of each training text for the teacher to label")


class PruneArgs(StudentArgs):
    """`tunesmith prune RUN`."""

    sparsity: float = Field(0.3, description="share of every layer's feed-forward neurons to remove, least "
                            "important first")
    drop_layers: int = Field(0, description="also remove this many whole layers, those that change their input least")


def distill(args: DistillArgs, out=print) -> Path:
    from tunesmith.compress.student import keep_layers, layer_list, spread_layers

    teacher = _teacher(args, "distill", DISTILL_EPOCHS)
    total = len(layer_list(teacher.model))
    if args.student_layers >= total:
        raise UserError(f"--student-layers {args.student_layers}: the teacher has {total} layers; a student needs "
                        "fewer")
    layers = spread_layers(total, args.student_layers)
    extra = _extra_texts(teacher, args.unlabeled, args.augment_copies)
    target = lineage.target_folder(teacher.source, f"{args.student_layers}layers", args.name, args.output)
    settings = {"student_layers": args.student_layers, "teacher_layers_kept": layers, "unlabeled": args.unlabeled,
                "augment_copies": args.augment_copies, "extra_texts": len(extra), **_recorded(args, teacher)}
    out(f"distill: a {args.student_layers}-layer student from teacher layers {layers} (of {total})")
    student = keep_layers(teacher.model, args.student_layers)
    return _train_and_finish(teacher, student, args, ("distill", settings, target), extra, layers, out)


def prune(args: PruneArgs, out=print) -> Path:
    import copy

    from tunesmith.compress import student as cut

    if not 0 <= args.sparsity < 1:
        raise UserError(f"--sparsity {args.sparsity}: give the share of feed-forward neurons to remove, from 0 to "
                        "below 1")
    if args.sparsity == 0 and not args.drop_layers:
        raise UserError("--sparsity 0: nothing to prune; give a share of feed-forward neurons, or --drop-layers N")
    teacher = _teacher(args, "prune", PRUNE_EPOCHS)
    layers = cut.layer_list(teacher.model)
    for layer in layers:
        cut.feed_forward(layer)  # refuses a model without a BERT-style feed-forward block, before any work
    if not 0 <= args.drop_layers < len(layers):
        raise UserError(f"--drop-layers {args.drop_layers}: the model has {len(layers)} layers; drop between 0 and "
                        f"{len(layers) - 1}")
    target = lineage.target_folder(teacher.source, "pruned", args.name, args.output)
    batches = _calibration(teacher)
    pruned = copy.deepcopy(teacher.model)
    kept_layers = cut.drop_layers(pruned, args.drop_layers, batches)
    source_width = cut.feed_forward(layers[0])[0].out_features
    width = cut.prune_ffn(pruned, args.sparsity, batches) if args.sparsity else source_width
    before, after = count_parameters(teacher.model)["total"], count_parameters(pruned)["total"]
    out(f"prune: kept layers {kept_layers}, feed-forward width {width} of {source_width}; "
        f"{after:,} of {before:,} parameters left")
    settings = {"sparsity": args.sparsity, "drop_layers": args.drop_layers, "layers_kept": kept_layers,
                "ffn_width": width, "parameters": after, "source_parameters": before, **_recorded(args, teacher)}
    return _train_and_finish(teacher, pruned, args, ("prune", settings, target), [], kept_layers, out)


def _recorded(args: StudentArgs, teacher) -> dict:
    """The training settings recorded with the new run."""
    return {"temperature": args.temperature, "alpha": args.alpha, "hidden_weight": args.hidden_weight,
            "epochs": teacher.cfg.epochs, "lr": teacher.cfg.lr}


def _teacher(args: StudentArgs, verb: str, default_epochs: float):
    """The source run loaded as a teacher, its settings carrying the student's passes and rate;
    flags that cannot apply are refused first."""
    from tunesmith.compress.distill import Teacher
    from tunesmith.methods import load_tuned
    from tunesmith.plan import settings_with

    source, cfg, task = _open(args.run, verb, args.lesson())
    cfg = settings_with(cfg, epochs=args.epochs or default_epochs, lr=args.lr or DISTILL_LR)
    tokenizer = task.load_processor(str(source.model_dir), cfg)
    return Teacher(source, cfg, task, tokenizer, load_tuned(task, str(source.model_dir)).eval())


def _open(run_path: str, verb: str, lesson):
    from tunesmith.compress.distill import check_distillable, distillation_loss
    from tunesmith.ensemble import is_ensemble
    from tunesmith.methods import METHODS
    from tunesmith.tasks import TASKS

    source = open_finished(run_path)
    if is_ensemble(source):
        raise UserError(f"{verb}: {run_path} is an ensemble; {verb} one of its member runs instead")
    lineage.refuse_int8_source(source, verb)
    cfg = source.settings()
    task = TASKS[cfg.task]
    check_distillable(task, cfg, verb)
    if not METHODS[cfg.method].exportable:  # prompt learning: its model is not a plain encoder to cut
        raise UserError(f"{verb}: runs of method {cfg.method} cannot be {verb}ed (their model keeps a prompt "
                        "encoder beside the network); use a run of full, freeze, lora or adapter")
    distillation_loss(task.problem_type, lesson.temperature, lesson.alpha, lesson.hidden_weight)  # refuses bad flags now
    return source, cfg, task


def _extra_texts(teacher, unlabeled: str | None, augment_copies: int) -> list:
    """Texts the teacher labels for the student: an unlabeled file and edited training copies."""
    source, cfg, task = teacher.source, teacher.cfg, teacher.task
    texts = []
    if unlabeled:
        _rows, inputs = task.read_inputs(unlabeled, "utf-8", None, cfg.text_pair_col)
        texts += list(inputs)
    if augment_copies:
        from tunesmith.data.augment import augment_examples

        train = source.split("train")
        augmented = augment_examples(train, augment_copies, cfg.augment_ops, cfg.augment_rate, cfg.seed)
        texts += list(augmented.texts[len(train):])
    return texts


def _calibration(teacher) -> list[dict]:
    """A few batches of training texts, as the model takes them, to rank neurons and layers."""
    from tunesmith.data.long_text import LongText

    source, cfg, task, tokenizer = teacher.source, teacher.cfg, teacher.task, teacher.tokenizer
    train = source.split("train")
    part = train.subset(range(min(CALIBRATION_ROWS, len(train))))
    features = task.encode(tokenizer, part.texts, None, source.labels(), cfg.resolved_max_length(), use_cache=False,
                           long_text=LongText.of(cfg))
    return [features.batch(list(range(i, min(i + 32, len(features))))) for i in range(0, len(features), 32)]


def _train_and_finish(teacher, student, args: StudentArgs, new_run: tuple, extra: list, layer_map: list[int],
                      out) -> Path:
    """Train `student` into the new run (`new_run`: its kind, recorded settings and folder), resumably."""
    from tunesmith.compress.distill import train_student
    from tunesmith.io import atomic_dir

    kind, settings, target = new_run
    source = teacher.source
    identity = {"kind": kind, "source": str(source.path.resolve()), "settings": settings}
    with lineage.training(target, identity, out) as (run, resuming):
        if not resuming:
            lineage.copy_run_files(source, run, model=False)
        student = train_student(student, teacher, run, args.lesson(), extra, layer_map, resume=resuming, log=out)
        with atomic_dir(run.model_dir) as tmp:
            student.save_pretrained(str(tmp))  # a plain model already (the source's was merged when saved)
            teacher.tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(run.checkpoints)  # a finished student is its model folder; nothing resumes it
        lineage.record(run, source, kind, settings)
        lineage.finish(run, source, out)
    out(f"wrote {target}; eval, predict, serve, export and quantize take it like any run")
    return target
