"""summarization and translation: source/target readers, splits by source, the metrics against
sacreBLEU and rouge-score, `check`, a tiny Llama run and a tiny T5 run from data to served
answers (and the T5's ONNX export), NLLB-style language tokens, and the batched engine."""

from __future__ import annotations

import json

import pytest

from conftest import make_qa_rows
from tunesmith.cli import main
from tunesmith.data.text_pairs import read_pairs, split_by_source
from tunesmith.errors import UserError
from tunesmith.evaluate.text_metrics import summary_scores, translation_scores

KEY = "t" * 24


def write_csv(path, header: list[str], rows: list[list[str]]) -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


# ---- data ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [["source", "target"], ["text", "summary"], ["document", "summary"],
                                    ["src", "tgt"], ["article", "headline"]])
def test_the_usual_column_names_are_read(tmp_path, header):
    path = write_csv(tmp_path / "d.csv", header, [["a long text", "short"], ["another text", "brief"]])
    pairs = read_pairs(path, "utf-8", None, None)["all"]
    assert pairs.texts == ["a long text", "another text"] and pairs.labels == ["short", "brief"]


def test_language_columns_are_picked_by_the_flags_and_an_unknown_one_is_named(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["id", "zh", "en"], [["1", "你好", "hello"], ["2", "谢谢", "thanks"]])
    assert read_pairs(path, "utf-8", "en", "zh")["all"].texts == ["hello", "thanks"]
    with pytest.raises(UserError, match="--target-lang fr: no such column"):
        read_pairs(path, "utf-8", "zh", "fr")
    with pytest.raises(UserError, match="--source-lang zh --target-lang en"):  # no flags: the hint names them
        read_pairs(path, "utf-8", None, None)


def test_an_empty_side_is_one_error_naming_the_row_and_column(tmp_path):
    path = write_csv(tmp_path / "d.csv", ["source", "target"], [["text", "fine"], ["text two", ""]])
    with pytest.raises(UserError, match=r"d.csv row 2: column 'target' is empty"):
        read_pairs(path, "utf-8", None, None)


def test_every_target_of_a_source_lands_in_one_split():
    from tunesmith.data.labeled import Examples

    sources = [f"s{i // 3}" for i in range(60)]  # 20 sources with three targets each
    examples = Examples(sources, [f"t{i}" for i in range(60)], "x", [str(i) for i in range(60)])
    val, test, train = split_by_source(examples, [0.1, 0.1], 0)
    seen = [set(part.texts) for part in (train, val, test)]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    assert len(train) + len(val) + len(test) == 60 and all(len(part) % 3 == 0 for part in (train, val, test))


def test_the_task_is_inferred_from_a_built_in_set():
    from tunesmith.tasks import infer_task

    assert infer_task("tatoeba-zh-en") == "translation" and infer_task("aclsum") == "summarization"


def test_the_built_in_sets_read_from_their_packages():
    """Found in the installed packages, never imported (aclsum's own code needs sienna, not installed)."""
    tatoeba = read_pairs("tatoeba-zh-en", "utf-8", "zh", "en")["all"]
    assert len(tatoeba) == 56578 and tatoeba.texts[0] == "我們試試看！" and tatoeba.labels[0] == "Let's try something."
    acl = read_pairs("aclsum", "utf-8", None, None)
    assert {k: len(v) for k, v in acl.items()} == {"train": 100, "val": 50, "test": 100}
    assert all(len(t) < len(s) * 2 for s, t in zip(acl["test"].texts, acl["test"].labels))


# ---- metrics ------------------------------------------------------------------------------------

def test_translation_scores_are_sacrebleus_with_every_reference():
    from sacrebleu.metrics import BLEU, CHRF

    hypotheses = ["the cat sat on the mat", "there is a dog"]
    references = [["the cat sat on the mat", "a cat sat on a mat"], ["a dog is there"]]
    scores = translation_scores(hypotheses, references)
    streams = [["the cat sat on the mat", "a dog is there"], ["a cat sat on a mat", None]]
    assert scores["bleu"] == pytest.approx(BLEU().corpus_score(hypotheses, streams).score)
    assert scores["chrf"] == pytest.approx(CHRF().corpus_score(hypotheses, streams).score)
    chinese = translation_scores(["我们试试看"], [["我们试试看吧"]])
    assert chinese["bleu_tokenize"] == "zh" and chinese["bleu"] > 40  # characters are BLEU's words for Chinese


def test_rouge_is_rouge_scores_and_per_character_for_chinese():
    from rouge_score import rouge_scorer

    scores = summary_scores(["the cats sat on the mat"], [["a cat was sitting on the mat", "dogs ran"]])
    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score("a cat was sitting on the mat",
                                                                            "the cats sat on the mat")
    assert scores["rouge_l"] == pytest.approx(expected["rougeL"].fmeasure)  # the best reference
    chinese = summary_scores(["猫坐在垫子上"], [["一只猫坐在垫子上"]])
    assert chinese["rouge_units"] == "characters" and chinese["rouge_1"] == pytest.approx(2 * 6 / (6 + 8))


# ---- a run, end to end ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def translated(tiny_causal_lm, tmp_path_factory):
    """A tiny Llama taught to "translate" questions into answers (columns named by language)."""
    base = tmp_path_factory.mktemp("t2t")
    rows = [[r["instruction"], r["output"]] for r in make_qa_rows(60)]
    data = write_csv(base / "pairs.csv", ["en", "fr"], rows)
    assert main(["train", data, "--task", "translation", "--source-lang", "en", "--target-lang", "fr",
                 "--model", tiny_causal_lm, "--output", str(base / "runs"), "--name", "t", "--max-length", "64",
                 "--epochs", "2", "--lr", "3e-3", "--eval-answers", "8", "--max-new-tokens", "6"]) == 0
    from tunesmith.runs import Run

    return Run(base / "runs" / "t"), data


def test_a_translation_run_scores_base_and_tuned_and_keeps_its_template(translated):
    import yaml

    run, _ = translated
    config = yaml.safe_load(run.config_file.read_text())
    assert config["prompt_template"] == "Translate the following {source_lang} text into {target_lang}.\n\n{source}"
    metrics = json.loads(run.metrics_file.read_text())
    for side in (metrics["test"], metrics["baseline"]):
        assert {"chrf", "bleu", "length_ratio", "loss"} <= set(side) and side["answered"] >= 1
    assert metrics["test"]["loss"] < metrics["baseline"]["loss"]
    # The split files hold the pairs as given; sources in test were never trained on.
    train = {tuple(json.loads(line)["text"])[0]["content"] for line in (run.data_dir / "train.jsonl").open()}
    test = {tuple(json.loads(line)["text"])[0]["content"] for line in (run.data_dir / "test.jsonl").open()}
    assert test and not train & test


def test_predict_and_serve_put_each_source_in_the_template(translated, tmp_path):
    from tunesmith.inference import Predictor
    from tunesmith.tasks.text_to_text import TextToTextProcessor

    run, _ = translated
    sources = write_csv(tmp_path / "new.csv", ["source"], [["what is the colour of snow"], ["tell me the colour of sun"]])
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run.path), sources, "-o", str(out)]) == 0
    generated = [json.loads(line)["generated"] for line in out.read_text().splitlines()]
    assert len(generated) == 2 and all(isinstance(g, str) for g in generated)

    predictor = Predictor.from_run(run)
    assert isinstance(predictor.tokenizer, TextToTextProcessor)
    framed = predictor.tokenizer.prompt_messages([{"role": "user", "content": "what is the colour of snow"}])
    assert framed[0]["content"] == "Translate the following English text into French.\n\nwhat is the colour of snow"

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    app = create_app(predictor, ServeSettings(run=str(run.path)), KeyRing([KEY]), run_info(run))
    with TestClient(app) as client:
        served = client.post("/v1/predict", json={"inputs": ["what is the colour of snow"],
                                                  "parameters": {"max_new_tokens": 6}},
                             headers={"Authorization": f"Bearer {KEY}"})
    assert served.status_code == 200 and served.json()[0]["generated"] == generated[0]  # greedy: the same answer


def test_eval_scores_a_new_file_of_pairs(translated, tmp_path, capsys):
    run, _ = translated
    rows = [[r["instruction"], r["output"]] for r in make_qa_rows(10, seed=5)]
    data = write_csv(tmp_path / "more.csv", ["en", "fr"], rows)
    assert main(["eval", str(run.path), data]) == 0
    metrics = json.loads((run.path / "eval" / "more" / "metrics.json").read_text())["test"]
    assert {"chrf", "bleu", "loss"} <= set(metrics) and metrics["answered"] == min(8, len({r[0] for r in rows}))


def test_beam_search_settings_reach_generate(translated):
    """--num-beams, --length-penalty and --no-repeat-ngram-size are how evaluation and predict
    generate: the answers are transformers' own beam search on the same prompt."""
    import dataclasses

    import torch

    from tunesmith.data.conversations import render_prompt
    from tunesmith.generation import generate
    from tunesmith.inference import Predictor

    run, _ = translated
    predictor = Predictor.from_run(run)
    processor = dataclasses.replace(predictor.tokenizer, num_beams=3, length_penalty=0.5, no_repeat_ngram_size=2)
    settings = processor.generation()
    assert (settings.num_beams, settings.length_penalty, settings.no_repeat_ngram_size) == (3, 0.5, 2)
    tokenizer = processor.tokenizer
    prompt = render_prompt(tokenizer, processor.prompt_messages([{"role": "user", "content": "what is the colour of sky"}]))
    ours = generate(predictor.model, tokenizer, [prompt], settings)[0]
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        theirs = predictor.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=settings.max_new_tokens,
                                          num_beams=3, length_penalty=0.5, no_repeat_ngram_size=2, early_stopping=True,
                                          do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                          eos_token_id=tokenizer.eos_token_id)
    assert ours == tokenizer.decode(theirs[0, ids.shape[1]:], skip_special_tokens=True)


def test_check_reports_both_sides_and_warns_of_summaries_longer_than_their_source(tiny_causal_lm, tmp_path, capsys):
    rows = [[f"the colour of sky is blue {i}", "blue"] for i in range(20)] + [["short", "a much longer summary text"]]
    data = write_csv(tmp_path / "s.csv", ["text", "summary"], rows)
    assert main(["check", data, "--task", "summarization", "--model", tiny_causal_lm, "--json"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    facts = report["facts"] if "facts" in report else report
    assert {"source_tokens", "target_tokens", "preview"} <= set(facts)
    assert "Summarize the following text." in facts["preview"]
    assert any("summary longer than its source" in w for w in report["warnings"])


def test_a_template_without_its_source_is_refused_up_front(tiny_causal_lm, tmp_path, capsys):
    data = write_csv(tmp_path / "s.csv", ["text", "summary"], [[f"text {i}", "t"] for i in range(20)])
    code = main(["train", data, "--task", "summarization", "--model", tiny_causal_lm, "--prompt-template", "Summarize",
                 "--output", str(tmp_path / "runs")])
    assert code == 2 and "--prompt-template: has no {source}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    code = main(["train", data, "--task", "translation", "--model", tiny_causal_lm, "--output", str(tmp_path / "runs")])
    assert code == 2 and "give --source-lang and --target-lang" in capsys.readouterr().err


def test_check_warns_of_test_sources_that_train_has(tiny_causal_lm, tmp_path, capsys):
    """Given splits can share sources (with the same or another target): check names the leak."""
    train = write_csv(tmp_path / "train.csv", ["text", "summary"], [[f"the text number {i}", "t"] for i in range(20)])
    val = write_csv(tmp_path / "val.csv", ["text", "summary"], [["a new text", "t"], ["another text", "u"]])
    test = write_csv(tmp_path / "test.csv", ["text", "summary"], [["the text number 3", "other"], ["fresh", "t"]])
    assert main(["check", train, "--task", "summarization", "--val-data", val, "--test-data", test,
                 "--model", tiny_causal_lm, "--json", "--no-quality"]) in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["facts"]["train_test_overlap"] == 1 and report["facts"]["train_val_overlap"] == 0
    assert any("1 test sources also appear in train" in w and "test.csv row 1" in w for w in report["warnings"])


# ---- the encoder-decoder family -------------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_run(tiny_t5, tmp_path_factory):
    """A tiny T5 tuned in full, with label smoothing, to "translate" questions into answers."""
    base = tmp_path_factory.mktemp("t5")
    rows = [[r["instruction"], r["output"]] for r in make_qa_rows(60)]
    data = write_csv(base / "pairs.csv", ["en", "fr"], rows)
    assert main(["train", data, "--task", "translation", "--source-lang", "en", "--target-lang", "fr",
                 "--model", tiny_t5, "--method", "full", "--output", str(base / "runs"), "--name", "t",
                 "--max-length", "64", "--epochs", "3", "--lr", "1e-2", "--label-smoothing", "0.1",
                 "--eval-answers", "8", "--max-new-tokens", "6"]) == 0
    from tunesmith.runs import Run

    return Run(base / "runs" / "t")


def test_an_encoder_decoder_run_trains_reloads_and_predicts(t5_run, tmp_path, capsys):
    import yaml

    from tunesmith.inference import Predictor
    from tunesmith.tasks.seq2seq import Seq2SeqProcessor

    config = yaml.safe_load(t5_run.config_file.read_text())
    assert config["prompt_template"] == "{source}" and config["label_smoothing"] == 0.1
    metrics = json.loads(t5_run.metrics_file.read_text())
    assert metrics["test"]["loss"] < metrics["baseline"]["loss"] and {"chrf", "bleu"} <= set(metrics["test"])
    predictor = Predictor.from_run(t5_run)
    assert isinstance(predictor.tokenizer, Seq2SeqProcessor) and predictor.model.config.is_encoder_decoder
    sources = write_csv(tmp_path / "new.csv", ["source"], [["what is the colour of snow"], ["tell me the colour of sun"]])
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(t5_run.path), sources, "-o", str(out)]) == 0
    generated = [json.loads(line)["generated"] for line in out.read_text().splitlines()]
    # The same answers as transformers' own generate on the tokenised source.
    ids = predictor.tokenizer.tokenizer(["what is the colour of snow"], return_tensors="pt")
    theirs = predictor.model.generate(**ids, max_new_tokens=6, do_sample=False)
    assert generated[0] == predictor.tokenizer.tokenizer.decode(theirs[0], skip_special_tokens=True).strip()
    capsys.readouterr()
    assert main(["generate", str(t5_run.path), "what is the colour of snow", "--max-new-tokens", "6"]) == 0
    assert generated[0] in capsys.readouterr().out
    assert main(["predict", str(t5_run.path), sources, "-o", str(out), "--backend", "onnx"]) == 2
    assert "--backend onnx: translation runs answer with PyTorch here" in capsys.readouterr().err


def test_an_encoder_decoder_run_is_served_in_batches_without_chat_routes(t5_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from tunesmith.inference import Predictor
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    predictor = Predictor.from_run(t5_run)
    expected = predictor.predict([[{"role": "user", "content": s}] for s in ("what is the colour of snow", "coal")])
    app = create_app(predictor, ServeSettings(run=str(t5_run.path)), KeyRing([KEY]), run_info(t5_run))
    headers = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app) as client:
        served = client.post("/v1/predict", json={"inputs": ["what is the colour of snow", "coal"]}, headers=headers)
        streamed = client.post("/v1/predict", json={"inputs": ["coal"], "parameters": {"stream": True}}, headers=headers)
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]},
                           headers=headers)
    assert served.status_code == 200 and [r["generated"] for r in served.json()] == expected["answers"]
    assert streamed.status_code == 200 and f'"generated": "{expected["answers"][1]}"' in streamed.text
    assert chat.status_code == 404  # the OpenAI-compatible routes serve decoder-only runs


def test_an_encoder_decoder_run_exports_encoder_and_decoders_checked_against_pytorch(t5_run, capsys):
    pytest.importorskip("onnxruntime")
    import numpy as np
    import onnxruntime as ort
    import torch

    from tunesmith.inference import Predictor

    assert main(["export", str(t5_run.path)]) == 0
    assert "largest logit difference" in capsys.readouterr().out
    files = {name: t5_run.model_dir / name for name in
             ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")}
    assert all(path.is_file() for path in files.values())
    # Optimum's names, and the encoder reproduces PyTorch's states.
    predictor = Predictor.from_run(t5_run)
    batch = predictor.tokenizer.tokenizer(["what is the colour of sky"], return_tensors="np")
    encoder = ort.InferenceSession(str(files["encoder_model.onnx"]))
    states = encoder.run(None, {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})[0]
    with torch.no_grad():
        expected = predictor.model.get_encoder()(input_ids=torch.from_numpy(batch["input_ids"])).last_hidden_state
    assert np.abs(states - expected.numpy()).max() < 1e-4
    decoder = ort.InferenceSession(str(files["decoder_with_past_model.onnx"]))
    assert "past_key_values.0.decoder.key" in [i.name for i in decoder.get_inputs()]


def test_lora_on_an_encoder_decoder_is_peft_seq2seq(tiny_t5):
    from tunesmith.config import build_config
    from tunesmith.methods import METHODS
    from tunesmith.tasks import TASKS
    from tunesmith.tasks.seq2seq import load_seq2seq

    cfg = build_config({"task": "summarization", "method": "lora", "model": tiny_t5}, "flags")
    tuned = METHODS["lora"].apply(load_seq2seq(tiny_t5), cfg, TASKS["summarization"])
    assert tuned.peft_config["default"].task_type == "SEQ_2_SEQ_LM"
    trainable = {name for name, p in tuned.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)


def test_the_teacher_forced_loss_is_the_models_own_and_label_smoothing_spreads_it(t5_run):
    import torch

    from tunesmith.inference import Predictor
    from tunesmith.tasks import seq2seq

    predictor = Predictor.from_run(t5_run)
    conversations = [[{"role": "user", "content": s}, {"role": "assistant", "content": t}]
                     for s, t in (("what is the colour of sky", "it is blue"), ("coal", "it is black please"))]
    features = seq2seq.encode(predictor.tokenizer, conversations, 64)
    batch = features.batch([0, 1])
    model = predictor.model.eval()
    with torch.no_grad():
        assert predictor.tokenizer.label_smoothing == 0.1  # the run's, from its config
        plain = seq2seq.training_loss(model, batch, dataclass_replace(predictor.tokenizer, label_smoothing=0.0))
        assert float(plain) == pytest.approx(float(model(**batch).loss), rel=1e-5)
        smoothed = seq2seq.training_loss(model, batch, dataclass_replace(predictor.tokenizer, label_smoothing=0.1))
        logits = model(**batch).logits.log_softmax(-1)
        mask = batch["labels"] != -100
        nll = -logits.gather(-1, batch["labels"].clamp(min=0)[..., None])[..., 0][mask].mean()
        uniform = -logits.mean(-1)[mask].mean()
    assert float(smoothed) == pytest.approx(float(0.9 * nll + 0.1 * uniform), rel=1e-5)


def dataclass_replace(processor, **changes):
    import dataclasses

    return dataclasses.replace(processor, **changes)


def test_language_tokens_of_nllb_style_models_mark_sources_and_force_the_target(tmp_path):
    """zh -> zho_Hans: the source starts with its language token, the target's is forced as the
    first generated token; a language the model lacks is one error naming its codes."""
    import torch
    from transformers import M2M100Config, M2M100ForConditionalGeneration, NllbTokenizer

    from tunesmith.tasks.seq2seq import Seq2SeqProcessor
    from tunesmith.generation import GenerationSettings

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "▁": 4}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        vocab[letter] = len(vocab)
    tokenizer = NllbTokenizer(vocab=vocab, merges=[], extra_special_tokens=["eng_Latn", "zho_Hans", "zho_Hant"])
    processor = Seq2SeqProcessor(tokenizer, source_lang="zh", target_lang="en")
    assert (processor.source_token, processor.target_token) == ("zho_Hans", "eng_Latn")
    ids = processor.prompt_ids("ni hao")
    assert ids[0] == tokenizer.convert_tokens_to_ids("zho_Hans") and ids[-1] == tokenizer.eos_token_id
    assert processor.target_ids("hi")[0] == tokenizer.convert_tokens_to_ids("eng_Latn")
    torch.manual_seed(0)
    model = M2M100ForConditionalGeneration(M2M100Config(
        vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, pad_token_id=1, eos_token_id=2,
        decoder_start_token_id=2, max_position_embeddings=64))
    (generated,) = processor.generate_ids(model, [ids], GenerationSettings(max_new_tokens=3))
    assert generated[0] == tokenizer.convert_tokens_to_ids("eng_Latn")
    with pytest.raises(UserError, match="--target-lang fr: the model has no token for it; give one of its codes"):
        Seq2SeqProcessor(tokenizer, source_lang="zh", target_lang="fr")
    with pytest.raises(UserError, match="--source-lang: this model marks languages with tokens"):
        Seq2SeqProcessor(tokenizer, target_lang="en")


def test_the_batch_engine_answers_requests_of_the_same_settings_together():
    """Waiting requests with equal settings (seeds aside) share one generate; others wait for
    their own batch; a cancelled one is settled without being decoded."""
    import torch

    from tunesmith.generation import GenerationSettings
    from tunesmith.serve.batch_engine import BatchEngine
    from tunesmith.serve.engine import Cancelled, Sequence

    class Recording:
        tokenizer = type("T", (), {"eos_token_id": 9, "decode": lambda self, ids, **_: " ".join(map(str, ids))})()
        batches: list = []

        def generate_ids(self, model, id_lists, settings, max_time=None):
            self.batches.append([ids[0] for ids in id_lists])
            return [[ids[0] + 1, 9] for ids in id_lists]

        def decode(self, ids, settings):
            return " ".join(map(str, ids[:-1]))

    model = torch.nn.Linear(1, 1)  # never called: the processor stands in for generate
    processor = Recording()
    engine = BatchEngine(model, processor, max_batch=8)
    greedy, beams = GenerationSettings(max_new_tokens=4), GenerationSettings(max_new_tokens=4, num_beams=2)
    sequences = [Sequence([1], greedy), Sequence([2], beams), Sequence([3], greedy.__class__(max_new_tokens=4, seed=5)),
                 Sequence([4], greedy)]
    sequences[3].cancel()
    for s in sequences:
        engine.submit(s)
    engine.start()
    try:
        answers = [s.future.result(timeout=10) for s in sequences[:3]]
        with pytest.raises(Cancelled):
            sequences[3].future.result(timeout=10)
    finally:
        engine.stop()
    assert processor.batches == [[1, 3], [2]]
    assert [a.text for a in answers] == ["2", "3", "4"] and answers[0].finish_reason == "stop"
