"""The encoder-decoder family of the text-to-text tasks (T5, mT5, BART, Marian, NLLB, mBART:
any `AutoModelForSeq2SeqLM`).

The encoder reads the source (in the run's template, "{source}" by default: an encoder-decoder
needs no instruction, it learns the task from the pairs), the decoder is trained teacher-forced
on the target: the labels are the target's tokens and the model shifts them right into its
decoder inputs. Label smoothing spreads `label_smoothing` of each token's target mass over the
vocabulary (Szegedy et al. 2016; the usual 0.1 for translation).

Multilingual models with language tokens (NLLB, mBART, M2M-100) need the source's language
marked on the encoder side and the target's forced as the first generated token; the ISO
codes of --source-lang / --target-lang are mapped to the model's own (zh -> zho_Hans for NLLB,
zh_CN for mBART-50, __zh__ for M2M-100), or the model's code can be given as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunesmith.data.batching import IGNORE, Features, collate, inference_batches
from tunesmith.errors import UserError
from tunesmith.forward import evaluating
from tunesmith.generation import GENERATE_BATCH, CallbackStreamer, GenerationSettings, cut_at_stop, generate_options

# ISO 639-1 -> 639-3, for models whose language tokens use three letters (NLLB).
ISO3 = {"ar": "arb", "cs": "ces", "de": "deu", "en": "eng", "es": "spa", "fa": "pes", "fr": "fra", "hi": "hin",
        "id": "ind", "it": "ita", "ja": "jpn", "ko": "kor", "nl": "nld", "pl": "pol", "pt": "por", "ru": "rus",
        "sv": "swe", "th": "tha", "tr": "tur", "uk": "ukr", "vi": "vie", "zh": "zho"}
LANGUAGE_TOKEN = re.compile(r"__[a-z]{2,3}__|[a-z]{2,3}_[A-Za-z]{2,4}")  # __zh__, zh_CN, zho_Hans


def is_encoder_decoder(source: str) -> bool:
    """Whether the model at `source` is an encoder-decoder (its config says so)."""
    from transformers import AutoConfig

    try:
        return bool(getattr(AutoConfig.from_pretrained(source), "is_encoder_decoder", False))
    except (OSError, ValueError):
        return False  # not a transformers folder: the model loader says why, in its own words


def load_seq2seq(source: str):
    """A pretrained encoder-decoder in fp32, ready to train."""
    from transformers import AutoModelForSeq2SeqLM

    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(source, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise UserError(f"--model {source}: cannot load as an encoder-decoder ({str(exc).splitlines()[0]})") from None
    model.config.use_cache = False  # teacher forcing needs no cache
    return model


def load_saved_seq2seq(folder: str):
    from transformers import AutoModelForSeq2SeqLM

    # use_safetensors: a run folder may come from someone else; never unpickle it.
    model = AutoModelForSeq2SeqLM.from_pretrained(folder, use_safetensors=True, dtype=torch.float32)
    model.config.use_cache = True
    return model


def language_token(tokenizer, language: str | None, flag: str) -> str | None:
    """The model's token for `language` (an ISO code or the model's own); None for models
    without language tokens (T5, BART, Marian)."""
    if not hasattr(tokenizer, "src_lang"):
        return None
    known = [t for t in tokenizer.all_special_tokens if LANGUAGE_TOKEN.fullmatch(t)]
    if not language:
        raise UserError(f"{flag}: this model marks languages with tokens ({', '.join(known[:3])}, ...); give the "
                        "language (an ISO code such as zh or en, or the model's own code)")
    if language in known:
        return language
    wanted = {language, ISO3.get(language, language)}
    found = [t for t in known if t.strip("_").split("_")[0] in wanted]
    if not found:
        raise UserError(f"{flag} {language}: the model has no token for it; give one of its codes "
                        f"({', '.join(known[:6])}, ...)")
    return found[0]  # zh: zho_Hans before zho_Hant, the order the model lists them


@dataclass
class Seq2SeqProcessor:
    """The tokenizer of an encoder-decoder run, its template and how it generates; the
    counterpart of the decoder-only family's TextToTextProcessor, method for method."""

    tokenizer: object
    eval_answers: int = 100
    max_new_tokens: int = 128
    template: str = "{source}"
    source_lang: str = ""
    target_lang: str = ""
    num_beams: int = 1
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    label_smoothing: float = 0.0
    encoder_decoder = True

    def __post_init__(self):
        self.source_token = language_token(self.tokenizer, self.source_lang, "--source-lang")
        self.target_token = language_token(self.tokenizer, self.target_lang, "--target-lang")
        if self.source_token:  # the tokenizer then marks sources and targets with their languages
            self.tokenizer.src_lang, self.tokenizer.tgt_lang = self.source_token, self.target_token

    def save_pretrained(self, folder: str) -> None:
        self.tokenizer.save_pretrained(folder)

    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, num_beams=self.num_beams,
                                  length_penalty=self.length_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size)

    def prompt_messages(self, conversation):
        return conversation

    def prompt_text(self, conversation) -> str:
        """What the encoder reads: the last user turn in the template."""
        from tunesmith.data.text_pairs import language_name

        source = conversation if isinstance(conversation, str) else next(
            m["content"] for m in reversed(conversation) if m["role"] == "user")
        return self.template.format(source=source, source_lang=language_name(self.source_lang),
                                    target_lang=language_name(self.target_lang))

    def prompt_ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]  # with the model's special tokens (</s>, a language code)

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text_target=text)["input_ids"]

    def generate(self, model, texts: list[str], settings: GenerationSettings, stream=None) -> list[str]:
        """Answers to sources (already in the template), in batches."""
        outputs = self.generate_ids(model, [self.prompt_ids(t) for t in texts], settings, stream)
        return [self.decode(ids, settings) for ids in outputs]

    def decode(self, ids: list[int], settings: GenerationSettings) -> str:
        return cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), settings.stop).strip()

    def generate_ids(self, model, id_lists: list[list[int]], settings: GenerationSettings, stream=None,
                     max_time: float | None = None) -> list[list[int]]:
        """The generated token ids of each source (the decoder's start token dropped)."""
        torch.manual_seed(settings.seed)
        pad_id = self.tokenizer.pad_token_id
        options = {**generate_options(settings, self.tokenizer), "pad_token_id": pad_id}
        if self.target_token:
            options["forced_bos_token_id"] = self.tokenizer.convert_tokens_to_ids(self.target_token)
        if max_time is not None:
            options["max_time"] = max_time
        found: list[list[int]] = []
        with evaluating(model) as device:
            for start in range(0, len(id_lists), GENERATE_BATCH):
                chunk = id_lists[start : start + GENERATE_BATCH]
                batch = collate(chunk, pad_id)
                streamer = CallbackStreamer(self.tokenizer, stream, settings.stop) if stream and len(id_lists) == 1 else None
                out = model.generate(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device), streamer=streamer, **options)
                for row in out[:, 1:].tolist():  # position 0: the decoder's start token
                    found.append([t for t in row if t != pad_id])
        return found


def encode(processor: Seq2SeqProcessor, conversations: list, max_length: int) -> Features:
    """A row per pair: the source's ids, and the target's as labels (each cut to max_length);
    a conversation without an answer is a source to generate for."""
    rows, meta = [], []
    for index, conversation in enumerate(conversations):
        source = processor.prompt_ids(processor.prompt_text(conversation))[:max_length]
        if conversation[-1]["role"] != "assistant":
            rows.append({"input_ids": source})
            meta.append({"example": index, "prompt": True})
            continue
        target = processor.target_ids(conversation[-1]["content"])[:max_length]
        rows.append({"input_ids": source, "labels": target, "length": len(source) + len(target)})
        meta.append({"example": index, "prompt": False, "conversation": conversation})
    pad_id = processor.tokenizer.pad_token_id
    return Features(rows, pad_id, token_labels=True, meta=meta, processor=processor,
                    collate=lambda batch: collate_pairs(batch, pad_id))


def collate_pairs(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Sources padded with the pad token, targets with IGNORE: each side to its own longest."""
    batch = collate([r["input_ids"] for r in rows], pad_id)
    if "labels" in rows[0]:
        batch["labels"] = collate([r["labels"] for r in rows], IGNORE)["input_ids"]
    return batch


def token_losses(model, batch: dict, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per target token: the (smoothed) negative log-likelihood under teacher forcing, and
    which tokens count (not padding)."""
    labels = batch["labels"]
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).logits
    losses = F.cross_entropy(logits.float().transpose(1, 2), labels.clamp(min=0), reduction="none",
                             label_smoothing=label_smoothing)
    mask = labels != IGNORE
    return losses * mask, mask


def training_loss(model, batch: dict, processor: Seq2SeqProcessor) -> torch.Tensor:
    losses, mask = token_losses(model, batch, processor.label_smoothing)
    return losses.sum() / mask.sum().clamp(min=1)


def predict(model, features: Features, batch_size: int) -> dict:
    """Per example: the summed loss and target-token count of scored rows, and generated
    answers for source-only rows (as the decoder-only family's predict gives them)."""
    import numpy as np

    count = 1 + max((m["example"] for m in features.meta), default=-1)
    nll, tokens = np.zeros(count), np.zeros(count, dtype=np.int64)
    answers: list[str | None] = [None] * count
    scored = [i for i, m in enumerate(features.meta) if not m["prompt"]]
    prompts = [i for i, m in enumerate(features.meta) if m["prompt"]]
    with evaluating(model) as device:
        for batch_idx in inference_batches([features.rows[i]["length"] for i in scored], batch_size):
            batch = {k: v.to(device) for k, v in collate_pairs([features.rows[scored[j]] for j in batch_idx],
                                                           features.pad_id).items()}
            losses, mask = token_losses(model, batch)
            for row, j in enumerate(batch_idx):
                example = features.meta[scored[j]]["example"]
                nll[example] += float(losses[row].sum())
                tokens[example] += int(mask[row].sum())
    if prompts:
        processor = features.processor
        outputs = processor.generate_ids(model, [features.rows[i]["input_ids"] for i in prompts], processor.generation())
        for i, ids in zip(prompts, outputs):
            answers[features.meta[i]["example"]] = processor.decode(ids, processor.generation())
    return {"nll": nll, "tokens": tokens, "answers": answers}
