"""Shared fixtures: a tiny BERT built from a config (2 layers, hidden 32) and toy data.

The toy data is learnable by design (each class has its own cue words), so "loss goes
down" and "accuracy beats chance" are assertions that can fail when training is broken.
"""

from __future__ import annotations

import contextlib
import csv
import os
import random

import pytest

CUES = {"negative": ["bad", "awful", "sad", "terrible"], "neutral": ["okay", "fine", "average", "plain"],
        "positive": ["good", "great", "happy", "wonderful"]}
FILLER = ["the", "a", "movie", "film", "was", "is", "really", "quite", "plot", "actor", "story", "and", "very"]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Each test session gets its own token cache; tests never touch ~/.cache.
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def save_tiny_bert(folder, words: list[str]) -> list[str]:
    """A randomly initialised 2-layer BERT (hidden 32, seed 0) with a word-level tokenizer over
    `words`, saved in `folder`; returns the vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    tokenizer = BertTokenizer(vocab={word: i for i, word in enumerate(vocab)})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64,
                        # No dropout in the encoder: a random 2-layer model learns the toy cues in
                        # a few epochs only without it (LoRA dropout still exercises the RNG).
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return vocab


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A folder with a randomly initialised 2-layer BERT and a word-level tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    save_tiny_bert(folder, sorted({w for cues in CUES.values() for w in cues} | set(FILLER) | {"unknownword"}))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_sentence_model(tiny_model, tmp_path_factory) -> str:
    """The tiny BERT as a sentence-transformers model: its pooling config says mean pooling, so
    sequence tasks put their head on the mean-pooled states (tasks/mean_pool.py)."""
    import shutil

    folder = tmp_path_factory.mktemp("tiny-sentence") / "model"
    shutil.copytree(tiny_model, folder)
    write_mean_pooling(folder, 32)
    return str(folder)


def write_mean_pooling(folder, dimension: int) -> None:
    """sentence-transformers' files that say a model folder was trained with mean pooling."""
    import json

    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": dimension, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))


def make_rows(n_per_class: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for label, cues in CUES.items():
        for _ in range(n_per_class):
            words = rng.sample(FILLER, rng.randint(1, 4)) + rng.sample(cues, 2)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_csv(path, rows, fields=("text", "label")) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in fields})
    return str(path)


@pytest.fixture
def toy_csv(tmp_path) -> str:
    return write_csv(tmp_path / "toy.csv", make_rows(60))


def train_args(data: str, model: str, out, name: str = "run", *extra: str) -> list[str]:
    """CLI args for a fast tiny-model run."""
    return ["train", "--data", data, "--model", model, "--output", str(out), "--name", name,
            "--max-length", "16", "--batch-size", "8", "--epochs", "5", "--lr", "3e-3", "--no-baseline",
            "--seed", "0", *extra]


def train_tiny_run(base, tiny_model: str, method: str = "freeze", epochs: str = "1", per_class: int = 20):
    """Train a run of the tiny model on toy data under `base`; returns its folder."""
    from tunesmith.cli import main

    data = write_csv(base / "toy.csv", make_rows(per_class))
    assert main(train_args(data, tiny_model, base / "runs", "r", "--method", method, "--epochs", epochs)) == 0
    return base / "runs" / "r"


def interrupt_during_second_evaluation(monkeypatch, task, args: list[str]) -> None:
    """Run `tunesmith ARGS` and press Ctrl-C (KeyboardInterrupt) during its second validation
    pass: the run must stop with exit code 130 and leave a resumable checkpoint."""
    from tunesmith.cli import main

    calls = {"n": 0}
    original = type(task).metrics

    def interrupting(self, *rest):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *rest)

    with monkeypatch.context() as patched:
        patched.setattr(type(task), "metrics", interrupting)
        assert main(args) == 130


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QA_WORDS = ["what", "is", "the", "colour", "of", "sky", "grass", "snow", "sun", "blood", "coal", "it", "blue",
            "green", "white", "yellow", "red", "black", "answer", "tell", "me", "please", "a", "short"]


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> str:
    """A folder with a random 2-layer Llama (hidden 32) and a byte-level BPE tokenizer with a
    ChatML chat template, built in the test: no download, a second to make."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [" ".join(QA_WORDS)] * 4 + ["system user assistant\n?."]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>",
                                        bos_token="<|im_start|>")
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    """A folder with a random 1+1-layer T5 (d_model 32) and a byte-level BPE tokenizer that
    ends every text with </s>, as T5's does: an encoder-decoder built in the test."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([" ".join(QA_WORDS)] * 4 + ["translate summarize: ?."],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
                      num_heads=4, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return str(folder)


COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "sun": "yellow", "blood": "red", "coal": "black"}


def make_qa_rows(n: int, seed: int = 0) -> list[dict]:
    """Instruction rows whose answer follows from the question (learnable by a tiny model)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        thing = rng.choice(sorted(COLOURS))
        lead = rng.choice(["what is the colour of", "tell me the colour of", "please tell me the colour of"])
        extra = " ".join(rng.sample(["a", "short", "answer", "please"], rng.randint(0, 3)))
        rows.append({"instruction": f"{lead} {thing}", "input": extra, "output": f"it is {COLOURS[thing]}"})
    return rows


def free_port() -> int:
    """A loopback port nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def served_in_thread(app):
    """`app` served by uvicorn on a free loopback port in a background thread; yields its URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _postgres_programs() -> tuple[str, str] | None:
    """initdb and pg_ctl: on the PATH, or where Debian's postgresql package puts them."""
    import glob
    import shutil

    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(found):
        return found[0], found[1]
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if all(os.path.exists(f"{folder}/{name}") for name in ("initdb", "pg_ctl")):
            return f"{folder}/initdb", f"{folder}/pg_ctl"
    return None


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the session (the machine's own initdb and pg_ctl, a Unix
    socket only, trust authentication); yields the URL of its `postgres` database. Skips, saying
    why, where there is no server program or no driver."""
    import shutil
    import subprocess
    import tempfile

    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver, tunesmith[postgres]) is not installed")
    programs = _postgres_programs()
    if programs is None:
        pytest.skip("no PostgreSQL server programs (initdb, pg_ctl) on this machine: apt-get install postgresql")
    initdb, pg_ctl = programs
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="pg-", dir="/tmp")  # a short path: a Unix socket's path is at most 107 bytes
    if os.geteuid() == 0:  # initdb refuses to run as root: the server runs as the postgres account
        if shutil.which("runuser") is None or not _account_exists("postgres"):
            pytest.skip("running as root without a 'postgres' account to run the test server as")
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = f"{root}/data"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "check": True}
    subprocess.run([*as_user, initdb, "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], **quiet)
    subprocess.run([*as_user, pg_ctl, "-D", data, "-l", f"{root}/log", "-w", "-o",
                    f"-k {root} -c listen_addresses='' -F", "start"], **quiet)
    try:
        yield f"postgresql://postgres@/postgres?host={root}"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", data, "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(root, ignore_errors=True)


def _account_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture
def postgres_database(postgres_server):
    """A factory of new, empty databases on the test server: each call returns one's URL."""
    import uuid

    import psycopg

    def make() -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        # The server trusts local connections; the password is there so tests can check no log shows it.
        return postgres_server.replace("postgres@/postgres?", f"postgres:not-for-logs@/{name}?")

    return make


def split_data(data, val_data=None, test_data=None, **settings):
    """`data.splits.load_splits` over the settings a run would have for these flags."""
    from tunesmith.config import build_config
    from tunesmith.data.splits import load_splits

    given = {"data": data, "val_data": val_data, "test_data": test_data, **settings}
    return load_splits(build_config({"task": "text-classification", **{k: v for k, v in given.items() if v is not None}},
                                    "test"))
