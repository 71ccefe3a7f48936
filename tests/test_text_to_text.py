"""summarization and translation: source/target readers, splits by source, the metrics against
sacreBLEU and rouge-score, `check`, and a tiny Llama run from data to served answers."""

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


def test_an_encoder_decoder_model_is_refused_in_one_line(tiny_causal_lm, tmp_path, capsys):
    """Encoder-decoder models (T5, BART, Marian) are not tuned yet: one line says so, before any work."""
    import shutil

    from transformers import T5Config

    t5 = tmp_path / "tiny-t5"
    shutil.copytree(tiny_causal_lm, t5)  # its tokenizer, with a T5's config
    T5Config(vocab_size=400, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2).save_pretrained(t5)
    data = write_csv(tmp_path / "s.csv", ["text", "summary"], [[f"text {i}", "t"] for i in range(20)])
    code = main(["train", data, "--task", "summarization", "--model", str(t5), "--output", str(tmp_path / "runs")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert code == 2 and len(lines) == 1 and "an encoder-decoder model (t5)" in lines[0]
    assert not (tmp_path / "runs").exists()


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
