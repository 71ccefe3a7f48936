"""A model card for a run's `model/` folder: Hugging Face's `README.md` convention.

The YAML block at the top is what the Hub, `huggingface_hub.ModelCard` and model browsers
read (base_model, library_name, pipeline_tag, language, license, metrics as a model-index);
the text below it is for people: the data, the method, the test scores beside the untuned
baseline, how to load the model without tunesmith, and its limits. It never quotes a training
text: only file names, counts and label names, which the run's labels.json already holds.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import yaml

from tunesmith.io import write_text

# Licences of the models tunesmith ships or names by alias (their own model cards say so);
# another base model's licence is read from its folder's card when it has one.
KNOWN_LICENSES = {"minilm": "apache-2.0", "e5-small": "mit", "smollm2": "apache-2.0", "efficientnet-lite0": "apache-2.0"}
HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2", "e5-small": "intfloat/multilingual-e5-small",
           "smollm2": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# The language a card declares, from the script most training texts are written in. Latin is
# English only as the likeliest reading, and the card says where the tag came from.
SCRIPT_LANGUAGES = {"LATIN": "en", "CJK": "zh"}
SHOWN_LABELS = 20


def write(run) -> Path | None:
    """`run`'s model/README.md from its config, labels, splits and metrics; None when the run
    has no model folder (an ensemble answers through its members')."""
    if not run.model_dir.is_dir():
        return None
    path = run.model_dir / "README.md"
    write_text(path, render(run))
    return path


def render(run) -> str:
    from tunesmith.tasks import TASKS

    cfg, metrics = run.settings(), json.loads(run.metrics_file.read_text(encoding="utf-8"))
    task = TASKS[cfg.task]
    counts = {name: _rows(run.data_dir / f"{name}.jsonl") for name in ("train", "val", "test")}
    language = _language(run)
    header = {
        "base_model": _base_model(cfg.model), "library_name": _library(run), "pipeline_tag": task.pipeline_tag,
        **({"language": [language]} if language else {}),
        **({"license": license} if (license := _license(cfg.model)) else {}),
        "tags": ["tunesmith", cfg.task, cfg.method],
        "model-index": [{"name": run.path.name, "results": _results(task, cfg, metrics)}],
    }
    front = yaml.safe_dump({k: v for k, v in header.items() if v is not None}, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + _summary(run, cfg, task, metrics, counts, language)


def _results(task, cfg, metrics: dict) -> list[dict]:
    """The test scores, and the untuned baseline's beside them, as model-index entries."""
    dataset = {"name": Path(str(cfg.data)).name, "type": "custom"}
    tested = {k: v for k, v in (metrics.get("test") or {}).items() if isinstance(v, (int, float)) and k != "count"}
    baseline = {k: v for k, v in (metrics.get("baseline") or {}).items() if isinstance(v, (int, float)) and k != "count"}
    results = []
    if tested:
        results.append({"task": {"type": task.pipeline_tag}, "dataset": {**dataset, "split": "test"},
                        "metrics": [{"type": k, "value": round(float(v), 4), "name": f"test {k}"}
                                    for k, v in tested.items()]})
    if baseline:
        results.append({"task": {"type": task.pipeline_tag}, "dataset": {**dataset, "split": "test"},
                        "metrics": [{"type": k, "value": round(float(v), 4),
                                     "name": f"untuned baseline {k} ({task.baseline_name})"} for k, v in baseline.items()]})
    return results


def _summary(run, cfg, task, metrics: dict, counts: dict, language: str | None) -> str:
    labels = run.labels() if run.labels_file.is_file() else []
    shown = ", ".join(f"`{label}`" for label in labels[:SHOWN_LABELS]) + (", ..." if len(labels) > SHOWN_LABELS else "")
    lines = [f"# {run.path.name}", "",
             f"A {task.pipeline_tag} model fine-tuned with tunesmith from "
             f"`{_base_model(cfg.model) or cfg.model}` ({cfg.method}).", "",
             "## Data", "",
             f"- file: `{Path(str(cfg.data)).name}`; rows: {counts['train']:,} train, {counts['val']:,} validation, "
             f"{counts['test']:,} test (the test split was never trained on, nor used to choose a checkpoint)"]
    if labels:
        lines.append(f"- {len(labels)} labels: {shown}")
    lines += ["", "## Training", "",
              f"- method: {cfg.method}; learning rate {cfg.lr:g}; epochs {cfg.epochs:g}; batch {cfg.batch_size}; "
              f"max length {cfg.resolved_max_length()}; seed {cfg.seed}",
              f"- the checkpoint kept is the best on validation {cfg.metric}", "", "## Results (test split)", "",
              "| metric | fine-tuned | untuned baseline |", "|---|---|---|"]
    baseline = metrics.get("baseline") or {}
    for key, value in (metrics.get("test") or {}).items():
        if isinstance(value, (int, float)) and key != "count":
            base = baseline.get(key)
            lines.append(f"| {key} | {value:.4f} | {f'{base:.4f}' if isinstance(base, (int, float)) else '-'} |")
    lines += ["", f"The baseline is {task.baseline_name}.", "", "## Use", "", *_how_to_load(run, task),
              *(["", *task.card_usage()] if task.card_usage() else []), "",
              "## Limits", "", _length_limit(cfg, task)]
    if language:
        lines.append(f"- language: `{language}`, read from the script most training texts are written in")
    lines.append("- the scores hold for data like the training data; score yours with `tunesmith eval RUN DATA`")
    return "\n".join(lines) + "\n"


def _length_limit(cfg, task) -> str:
    if task.pipeline_tag == "image-classification":
        return "- images are resized to the input size the model was trained at"
    return f"- inputs longer than {cfg.resolved_max_length()} tokens are cut to that length"


def _how_to_load(run, task) -> list[str]:
    architectures = _model_config(run).get("architectures") or []
    if not architectures:
        return ["```bash", f"tunesmith predict {run.path.name} inputs.csv -o predictions.csv", "```"]
    if architectures[0].endswith("ForCausalLM"):  # causal-lm, preference, and the text-to-text tasks on one
        return ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'tokenizer = AutoTokenizer.from_pretrained("path/to/model")',
                'model = AutoModelForCausalLM.from_pretrained("path/to/model")', "```"]
    auto = {"text-classification": "AutoModelForSequenceClassification",
            "token-classification": "AutoModelForTokenClassification",
            "text-generation": "AutoModelForCausalLM",
            "image-classification": "AutoModelForImageClassification",
            "sentence-similarity": "AutoModel",
            "question-answering": "AutoModelForQuestionAnswering",
            "text-ranking": "AutoModelForSequenceClassification",
            "summarization": "AutoModelForSeq2SeqLM",  # an encoder-decoder's (decoder-only ones are above)
            "translation": "AutoModelForSeq2SeqLM"}[task.pipeline_tag]
    if _model_config(run).get("tunesmith_pooling"):  # tunesmith's own head on a plain body (tasks/mean_pool.py)
        auto = "AutoModel"
    return ["```python", f"from transformers import AutoTokenizer, {auto}", "",
            'tokenizer = AutoTokenizer.from_pretrained("path/to/model")',
            f'model = {auto}.from_pretrained("path/to/model")', "```"]


def _base_model(name: str) -> str | None:
    """A Hub id for the base model, or None for a local folder (its path says nothing to others)."""
    key = _alias(name)
    if key in HUB_IDS:
        return HUB_IDS[key]
    return None if key is not None or Path(name).exists() else name


def _license(name: str) -> str | None:
    key = _alias(name)
    if key in KNOWN_LICENSES:
        return KNOWN_LICENSES[key]
    card = Path(name) / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):
            try:
                found = yaml.safe_load(text.split("---", 2)[1]) or {}
            except yaml.YAMLError:
                return None
            return found.get("license") if isinstance(found.get("license"), str) else None
    return None


def _alias(name: str) -> str | None:
    from tunesmith.e5small import E5_NAMES
    from tunesmith.gguf import SMOLLM2_NAMES
    from tunesmith.models import MINILM_NAMES

    lowered = str(name).lower()
    for key, names in (("minilm", MINILM_NAMES), ("e5-small", E5_NAMES), ("smollm2", SMOLLM2_NAMES),
                       ("efficientnet-lite0", {"efficientnet-lite0"})):
        if lowered in names:
            return key
    return None


def _library(run) -> str:
    """transformers when model/ loads with the Auto classes (config.json names an architecture)."""
    return "transformers" if _model_config(run).get("architectures") else "tunesmith"


def _model_config(run) -> dict:
    path = run.model_dir / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        return {}


def _language(run) -> str | None:
    from tunesmith.data import text

    train = run.data_dir / "train.jsonl"
    if not train.is_file():
        return None
    sample = []
    with open(train, encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number >= 500:
                break
            value = json.loads(line).get("text")
            if isinstance(value, str):
                sample.append(value)
            elif isinstance(value, list) and value and isinstance(value[0], str):
                sample.append(" ".join(value))
    main, _ = text.other_script_rows(sample) if sample else (None, [])
    if main == "CJK":  # kana make it Japanese, hangul Korean; Chinese otherwise
        names = [unicodedata.name(ch, "") for t in sample for ch in t]
        for prefix, language in (("HIRAGANA", "ja"), ("KATAKANA", "ja"), ("HANGUL", "ko")):
            if sum(n.startswith(prefix) for n in names) > 0.1 * len(names):
                return language
    return SCRIPT_LANGUAGES.get(main)


def _rows(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
