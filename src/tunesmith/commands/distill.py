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

from tunesmith.compress import lineage
from tunesmith.errors import UserError
from tunesmith.methods import count_parameters
from tunesmith.runs import open_finished

DISTILL_EPOCHS = 3.0  # a student starting from the teacher's own layers settles in a few passes
DISTILL_LR = 1e-4  # twice full fine-tuning's 5e-5: the student has to move further than a fine-tune does
PRUNE_EPOCHS = 1.0  # recovery only: the pruned model starts close to the source
CALIBRATION_ROWS = 256  # training texts that rank neurons and layers


def distill(run_path: str, student_layers: int = 3, unlabeled: str | None = None, augment_copies: int = 0,
            temperature: float = 2.0, alpha: float = 0.5, epochs: float | None = None, lr: float | None = None,
            name: str | None = None, output: str | None = None, out=print, hidden_weight: float = 0.0) -> Path:
    from tunesmith.compress.student import keep_layers, layer_list, spread_layers

    source, cfg, task = _open(run_path, "distill", temperature, alpha, hidden_weight)
    teacher = _teacher(source, task)
    total = len(layer_list(teacher))
    if student_layers >= total:
        raise UserError(f"--student-layers {student_layers}: the teacher has {total} layers; a student needs fewer")
    layers = spread_layers(total, student_layers)
    extra = _extra_texts(source, cfg, task, unlabeled, augment_copies)
    target = lineage.target_folder(source, f"{student_layers}layers", name, output)
    settings = {"student_layers": student_layers, "teacher_layers_kept": layers, "unlabeled": unlabeled,
                "augment_copies": augment_copies, "extra_texts": len(extra), "temperature": temperature,
                "alpha": alpha, "hidden_weight": hidden_weight, "epochs": epochs or DISTILL_EPOCHS,
                "lr": lr or DISTILL_LR}
    out(f"distill: a {student_layers}-layer student from teacher layers {layers} (of {total})")
    tokenizer = task.load_processor(str(source.model_dir), cfg)
    return _train_and_finish(source, cfg, task, tokenizer, teacher, keep_layers(teacher, student_layers), "distill",
                             settings, target, extra, out, layers)


def prune(run_path: str, sparsity: float = 0.3, drop_layers: int = 0, epochs: float | None = None,
          lr: float | None = None, temperature: float = 2.0, alpha: float = 0.5, name: str | None = None,
          output: str | None = None, out=print, hidden_weight: float = 0.0) -> Path:
    import copy

    from tunesmith.compress import student as cut

    source, cfg, task = _open(run_path, "prune", temperature, alpha, hidden_weight)
    if not 0 <= sparsity < 1:
        raise UserError(f"--sparsity {sparsity}: give the share of feed-forward neurons to remove, from 0 to below 1")
    if sparsity == 0 and not drop_layers:
        raise UserError("--sparsity 0: nothing to prune; give a share of feed-forward neurons, or --drop-layers N")
    teacher = _teacher(source, task)
    layers = cut.layer_list(teacher)
    for layer in layers:
        cut.feed_forward(layer)  # refuses a model without a BERT-style feed-forward block, before any work
    if not 0 <= drop_layers < len(layers):
        raise UserError(f"--drop-layers {drop_layers}: the model has {len(layers)} layers; drop between 0 and "
                        f"{len(layers) - 1}")
    target = lineage.target_folder(source, "pruned", name, output)
    tokenizer = task.load_processor(str(source.model_dir), cfg)
    batches = _calibration(source, cfg, task, tokenizer)
    pruned = copy.deepcopy(teacher)
    kept_layers = cut.drop_layers(pruned, drop_layers, batches)
    source_width = cut.feed_forward(layers[0])[0].out_features
    width = cut.prune_ffn(pruned, sparsity, batches) if sparsity else source_width
    before, after = count_parameters(teacher)["total"], count_parameters(pruned)["total"]
    out(f"prune: kept layers {kept_layers}, feed-forward width {width} of {source_width}; "
        f"{after:,} of {before:,} parameters left")
    settings = {"sparsity": sparsity, "drop_layers": drop_layers, "layers_kept": kept_layers, "ffn_width": width,
                "parameters": after, "source_parameters": before, "temperature": temperature,
                "alpha": alpha, "hidden_weight": hidden_weight, "epochs": epochs or PRUNE_EPOCHS, "lr": lr or DISTILL_LR}
    return _train_and_finish(source, cfg, task, tokenizer, teacher, pruned, "prune", settings, target, [], out,
                             kept_layers)


def _open(run_path: str, verb: str, temperature: float, alpha: float, hidden_weight: float):
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
    distillation_loss(task.problem_type, temperature, alpha, hidden_weight)  # refuses bad flags now
    return source, cfg, task


def _teacher(source, task):
    from tunesmith.methods import load_tuned

    return load_tuned(task, str(source.model_dir)).eval()


def _extra_texts(source, cfg, task, unlabeled: str | None, augment_copies: int) -> list:
    """Texts the teacher labels for the student: an unlabeled file and edited training copies."""
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


def _calibration(source, cfg, task, tokenizer) -> list[dict]:
    """A few batches of training texts, as the model takes them, to rank neurons and layers."""
    from tunesmith.data.long_text import LongText

    train = source.split("train")
    part = train.subset(range(min(CALIBRATION_ROWS, len(train))))
    features = task.encode(tokenizer, part.texts, None, source.labels(), cfg.resolved_max_length(), use_cache=False,
                           long_text=LongText.of(cfg))
    return [features.batch(list(range(i, min(i + 32, len(features))))) for i in range(0, len(features), 32)]


def _train_and_finish(source, cfg, task, tokenizer, teacher, student, kind: str, settings: dict, target: Path,
                      extra: list, out, layer_map: list[int]) -> Path:
    from tunesmith.compress.distill import train_student
    from tunesmith.io import atomic_dir

    cfg.epochs, cfg.lr = settings["epochs"], settings["lr"]
    identity = {"kind": kind, "source": str(source.path.resolve()), "settings": settings}
    with lineage.training(target, identity, out) as (run, resuming):
        if not resuming:
            lineage.copy_run_files(source, run, model=False)
        student = train_student(student, teacher, source, run, cfg, task, tokenizer, extra, settings["temperature"],
                                settings["alpha"], out, settings["hidden_weight"], layer_map, resume=resuming)
        with atomic_dir(run.model_dir) as tmp:
            student.save_pretrained(str(tmp))  # a plain model already (the source's was merged when saved)
            tokenizer.save_pretrained(str(tmp))
        shutil.rmtree(run.checkpoints)  # a finished student is its model folder; nothing resumes it
        lineage.record(run, source, kind, settings)
        lineage.finish(run, source, out)
    out(f"wrote {target}; eval, predict, serve, export and quantize take it like any run")
    return target

