"""Tasks, registered by name. A task knows its data, its model head, its metrics and how
to decode predictions; the training loop and the commands know none of that.

Adding a task = one module that calls `register_task` (and an import below). The loop and
the commands look tasks up here and never branch on a task's name. Names follow the
Hugging Face pipeline names users already know.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

TASKS: dict[str, "Task"] = {}


class Task(Protocol):
    name: str
    peft_task_type: str  # PEFT's TaskType for this head (keeps the head trainable under LoRA)
    metrics_higher_is_better: dict[str, bool]  # metrics that can select the best checkpoint
    default_metric: str
    has_baseline: bool  # whether `baseline` (an untuned linear probe) is meaningful for the task
    baseline_name: str  # what the baseline is, as `train` names it beside the test metric

    # Data: validated examples, and the task's own checks (run before any compute).
    def load_data(self, cfg): ...  # -> Splits
    def read_labeled(self, source: str, cfg: dict, labels: list[str], text_col=None, label_col=None,
                     encoding: str = "utf-8"): ...  # -> Examples (for `eval RUN DATA`)
    def check(self, splits, tokenizer, max_length: int): ...  # -> CheckReport

    # Model: a fresh head on a pretrained body, or a saved run's model (safetensors only);
    # the processor turns raw inputs into model inputs (a tokenizer, or image preprocessing)
    # and is saved beside the model.
    default_model: str
    # Settings this task needs other than TrainConfig's defaults, used when the user gives none
    # (e.g. causal-lm's micro-batch, image-classification's method), and a learning rate for a
    # (method, model) pair that differs from the method's default (None: the method's).
    train_defaults: dict
    def default_lr(self, method: str, model: str) -> float | None: ...
    # Whether the method's learning rate may follow the run's length (Method.lr_for_steps): true
    # where that was measured (single-label sequence classification, docs/benchmarks.md).
    lr_by_steps: bool
    def load_processor(self, source: str, cfg): ...  # cfg: the run's TrainConfig
    # pooling: "mean" puts a sequence head on the mean of the body's last hidden states
    # (tasks/mean_pool.py); tasks without a sequence head ignore it.
    def build_model(self, source: str, labels: list[str], pooling: str = "cls"): ...
    def load_model(self, folder: str): ...

    # Inputs -> Features the loop batches; model -> outputs; outputs -> metrics.
    def encode(self, tokenizer, inputs: list, targets: list | None, labels: list[str], max_length: int,
               use_cache: bool = True, augment: bool = False,
               long_text=None): ...  # -> Features; augment: training split only; long_text: a LongText
    # How texts longer than max_length may be read (--long-text; data/long_text.py): "truncate"
    # for all, "head-tail" and "chunk" for single-text sequence tasks.
    long_text_modes: tuple[str, ...]
    def predict(self, model, features, batch_size: int = 32) -> Any: ...
    def metrics(self, targets: list, outputs, labels: list[str]) -> dict: ...
    def summary(self, metrics: dict) -> str: ...  # one line for the terminal

    # Capabilities and hooks, with their defaults in TaskDefaults (below): quality_checks, servable (and
    # answer, the kind of one served answer, which serve/schemas.py turns into its shape), settings, exportable, quantisable, ensemble, generative (then `answer_metrics(model, processor, inputs) -> dict`,
    # generated answers scored against references, added to the test metrics), serves_images,
    # sequences_per_example, problem_type, training_loss, score_reference.
    servable: bool
    answer: str | None
    settings: tuple
    exportable: bool
    quantisable: bool
    ensemble: tuple[str, ...]
    generative: bool
    serves_images: bool
    sequences_per_example: int
    default_max_length: int

    # After training, on the validation split: decision settings saved with the model
    # (per-label thresholds for multi-label); returns what was chosen, for metrics.json.
    def tune_on_validation(self, model, features, targets: list, labels: list[str]) -> dict: ...

    # The untuned baseline (a linear probe on frozen features), when has_baseline.
    def baseline(self, model, train, test, train_targets, test_targets, labels, seed) -> dict: ...

    # `predict` on a file: the inputs it holds, and predictions written beside its rows.
    def read_inputs(self, path: str, encoding: str, text_col: str | None,
                    text_pair_col: str | None = None) -> tuple[list[dict], list]: ...
    def write_predictions(self, path: Path, rows: list[dict], outputs, labels: list[str]) -> None: ...

    # Serving: a request's input value -> model input (ValueError says what to send), the
    # batch's outputs -> one row per input, and a row -> the JSON object answered.
    def serve_input(self, value, pairs: bool): ...  # image tasks also take max_pixels=
    def output_rows(self, outputs) -> list: ...
    def serve_output(self, value, row, labels: list[str], top_k: int | None) -> dict: ...


class TaskDefaults:
    """What a task declares when it says nothing else. Each task class derives from it and
    overrides what differs; verbs read these declarations (and `supporting`) instead of
    keeping lists of task names."""

    train_defaults: dict = {}  # TrainConfig settings that differ for this task, used when not given
    methods: tuple[str, ...] | None = None  # the methods that can tune it (None: whichever declare it)
    output_suffixes: tuple[str, ...] = (".csv", ".tsv", ".jsonl", ".json")  # files `predict -o` writes
    baseline_name = "a linear probe on frozen features"
    default_max_length = 128
    long_text_modes: tuple[str, ...] = ("truncate",)
    sequences_per_example = 1  # sequences one example puts through the model (a DPO pair: 2)
    problem_type: str | None = None  # a sequence head's: single_label_classification, regression, ...
    lr_by_steps = False  # the method's one default rate, however long the run
    # Passes when --epochs is not given (plan.epochs), raised until training makes at least
    # `min_default_steps` optimizer steps: fewer are too few for a head and an adapter to settle
    # (docs/benchmarks.md, "Defaults").
    default_epochs = 3.0
    min_default_steps = 100
    servable = True  # `serve` answers its requests
    pipeline_tag = "text-classification"  # the Hugging Face pipeline its model card names
    answer: str | None = None  # a servable task's kind of answer: classification, entities, ... (serve/schemas.py)
    exportable = False  # `export --format onnx`: its model maps token ids to one row of logits
    quantisable = False  # `quantize`: int8 (ONNX Runtime where exportable, else PyTorch dynamic)
    ensemble: tuple[str, ...] = ()  # how `ensemble` may combine its runs: "mean" of outputs, "vote"
    generative = False  # answers are generated text: `answer_metrics`, `generate`, generation parameters
    serves_images = False  # served inputs are images (base64 or multipart), not texts
    rerank = False  # serves /v1/rerank: a query against a list of documents, scored pair by pair
    scores_answers = False  # serves /v1/score: a prompt's answers, each scored (a reward model)
    input_kind = "text"  # what one served input is, as GET /v1/model says ("relation": a text and two entities)
    builtin_data: tuple[str, ...] = ()  # built-in data sets only this task reads: `--task` is inferred from them
    mean_pooling = False  # its head can read the body's mean-pooled states (tasks/mean_pool.py)
    head_needs_input_ids = False  # its head reads states at given tokens (no prompt methods: they feed embeddings)
    class_probabilities = False  # predict gives one probability row over the labels per input (one label each)
    # Data-quality checks `check` and `train` run for it (quality/__init__.py): "label-errors",
    # "near-duplicates", "outliers", "text", "images".
    quality_checks: tuple[str, ...] = ()
    settings: tuple = ()  # its settings sections, defined beside it (ImageSettings, ...): keys only its runs read
    # Hooks, None where the task has none: `training_loss(model, batch, processor) -> (loss,
    # extras)` replaces the model's own loss; `score_reference(model, features) -> bool` scores every
    # split with the untuned model before training (DPO's reference log-probabilities);
    # `start_head(model, train_features, train_targets, labels, seed) -> str | None` sets a fresh
    # head's starting weights before training (a mean-pooled head: the linear probe's).
    smooths_labels = False  # its training_loss reads --label-smoothing (single-label heads read it anyway)
    training_loss = None
    score_reference = None
    start_head = None

    def default_lr(self, method: str, model: str) -> float | None:
        return None  # the method's own default

    def planned(self, cfg, splits, source: str) -> dict:
        """Settings of this task that the data decides (plan.resolve asks once): {key: (value,
        the reason)}; none by default."""
        return {}

    def sample_input(self, text: str, pairs: bool):
        """A served input made from `text` (the server's warm-up, the ONNX export's check)."""
        return {"text": text, "text_pair": text[::-1]} if pairs else text

    def card_usage(self) -> list[str]:
        """Lines the model card adds under "Use": what the model's inputs must look like."""
        return []

    def answer_metrics(self, model, processor, inputs: list) -> dict:
        raise NotImplementedError(f"{self.name} generates no answers (generative is False)")


def single_label(task) -> bool:
    """One label per input from a softmax head: what label smoothing, class weights and focal loss fit."""
    return task.problem_type == "single_label_classification"


def supporting(capability: str) -> list[str]:
    """Names of the registered tasks that declare `capability` (a truthy attribute)."""
    return [name for name, task in TASKS.items() if getattr(task, capability)]


def infer_task(data: str | None) -> str:
    """The task a data source can only be for, when `--task` is not given: an image folder or
    a built-in image set -> image-classification; CoNLL or JSONL tokens or a built-in tagged set
    -> token-classification; SQuAD JSON, rows with a context and a question, or the built-in
    duie-qa -> question-answering; a built-in set a task declares (`builtin_data`) -> that task;
    anything else -> text-classification."""
    from tunesmith.data import builtin, questions
    from tunesmith.data.images import IMAGE_SUFFIXES, builtin_names
    from tunesmith.tasks.token_classification import looks_tagged

    if not data:
        return "text-classification"
    if data in builtin_names():
        return "image-classification"
    if data in builtin.TAGGED:
        return "token-classification"
    if data == questions.BUILTIN:
        return "question-answering"
    owner = next((name for name, task in TASKS.items() if data in task.builtin_data), None)
    if owner is not None:
        return owner
    path = Path(data)
    if path.is_dir():
        if any(f.suffix.lower() in IMAGE_SUFFIXES for d in path.iterdir() if d.is_dir() for f in d.iterdir()):
            return "image-classification"
        if any(looks_tagged(f) for f in path.iterdir() if f.is_file() and f.stem.lower() == "train"):
            return "token-classification"
        if any(questions.looks_like_questions(f) for f in path.iterdir() if f.is_file() and f.stem.lower() == "train"):
            return "question-answering"
        return "text-classification"
    if questions.looks_like_questions(path):
        return "question-answering"
    return "token-classification" if looks_tagged(path) else "text-classification"


def register_task(task: "Task") -> "Task":
    TASKS[task.name] = task
    return task


from tunesmith.tasks import (  # noqa: E402,F401,I001  (each registers itself)
    causal_lm, grpo, image_classification, multi_label, preference, question_answering, regression, relation_extraction,
    reranker, reward_model, sentence_embedding, text_classification, text_to_text, token_classification,
)
