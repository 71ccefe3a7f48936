"""causal-lm and preference on a tiny random Llama (2 layers, hidden 32) built in the test."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import COLOURS, make_qa_rows
from tunesmith.cli import main
from tunesmith.data.batching import IGNORE
from tunesmith.data.conversations import collate_packed, encode_conversation, pack, render_text

CONVERSATION = [{"role": "user", "content": "what is the colour of sky"}, {"role": "assistant", "content": "it is blue"},
                {"role": "user", "content": "and grass"}, {"role": "assistant", "content": "it is green"}]


@pytest.fixture(scope="module")
def tokenizer(tiny_causal_lm):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_causal_lm)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def causal_args(data, model, out, name, *extra):
    return ["train", "--data", data, "--model", model, "--output", str(out), "--name", name, "--max-length", "64",
            "--batch-size", "8", "--lr", "3e-3", "--seed", "0", "--eval-answers", "4", "--max-new-tokens", "6", *extra]


# ---- loss masking ---------------------------------------------------------------------------------

def test_loss_covers_exactly_the_assistant_tokens(tokenizer):
    piece = encode_conversation(tokenizer, CONVERSATION, 1000)[0]
    trained = [i for i, label in enumerate(piece.labels) if label != IGNORE]
    assert all(piece.labels[i] == piece.input_ids[i] for i in trained)
    # The trained tokens are the two answers with their end-of-turn markers, nothing else.
    text, spans = render_text(tokenizer, CONVERSATION)
    assert [text[s:e] for s, e in spans] == ["it is blue<|im_end|>\n", "it is green<|im_end|>\n"]
    assert tokenizer.decode([piece.input_ids[i] for i in trained]) == "it is blue<|im_end|>\nit is green<|im_end|>\n"
    prompt_ids = [t for t, label in zip(piece.input_ids, piece.labels) if label == IGNORE]
    assert "and grass" in tokenizer.decode(prompt_ids) and "blue" not in tokenizer.decode(prompt_ids)


def test_train_on_prompt_trains_every_token_and_plain_text_is_chunked_not_cut(tokenizer):
    piece = encode_conversation(tokenizer, CONVERSATION, 1000, train_on_prompt=True)[0]
    assert piece.labels == piece.input_ids
    text = " ".join(["what is the colour of sky"] * 20)
    pieces = encode_conversation(tokenizer, text, 16)
    assert len(pieces) > 1 and all(len(p.input_ids) <= 16 for p in pieces)
    assert sum(len(p.input_ids) for p in pieces) == len(tokenizer(text)["input_ids"]) + 1  # + end of text


def test_template_less_tokenizer_uses_the_fallback_layout(tokenizer):
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    piece = encode_conversation(bare, CONVERSATION[:2], 1000)[0]
    assert bare.decode(piece.input_ids).startswith("### User:\nwhat is the colour of sky")
    assert bare.decode([t for t, l in zip(piece.input_ids, piece.labels) if l != IGNORE]) == "it is blue<|im_end|>"


# ---- packing ------------------------------------------------------------------------------------------

def test_packed_examples_never_attend_to_each_other(tiny_causal_lm, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()
    model.config.use_cache = False
    rows = []
    for thing in ("sky", "grass", "coal"):
        piece = encode_conversation(tokenizer, [{"role": "user", "content": f"what is the colour of {thing}"},
                                                {"role": "assistant", "content": f"it is {COLOURS[thing]}"}], 64)[0]
        rows.append({"input_ids": piece.input_ids, "labels": piece.labels})
    packed = pack(rows, 200)
    assert len(packed) == 1
    batch = collate_packed(packed, tokenizer.pad_token_id)
    with torch.no_grad():
        together = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
        start = 0
        for row in rows:
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            n = len(row["input_ids"])
            assert torch.allclose(together[start : start + n], alone, atol=1e-5)
            start += n
        # The control: the same concatenation without restarting positions lets later examples
        # see earlier ones, so this comparison can fail.
        leaky = model(input_ids=batch["input_ids"]).logits[0]
        n0, n1 = len(rows[0]["input_ids"]), len(rows[1]["input_ids"])
        alone = model(input_ids=torch.tensor([rows[1]["input_ids"]])).logits[0]
        assert not torch.allclose(leaky[n0 : n0 + n1], alone, atol=1e-3)
    # The first token of each example is never a target (it would be predicted from the one before).
    starts = [i for i, p in enumerate(packed[0]["position_ids"]) if p == 0]
    assert len(starts) == 3 and all(packed[0]["labels"][i] == IGNORE for i in starts)


# ---- SFT end to end -------------------------------------------------------------------------------------

def test_sft_lowers_held_out_loss_and_reports_base_vs_tuned(tmp_path, tiny_causal_lm, capsys):
    data = write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(80))
    assert main(causal_args(data, tiny_causal_lm, tmp_path / "runs", "sft", "--task", "causal-lm", "--method", "full",
                            "--epochs", "4", "--packing")) == 0
    run = tmp_path / "runs" / "sft"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["loss"] < metrics["baseline"]["loss"] - 0.5
    assert math.isclose(metrics["test"]["perplexity"], math.exp(metrics["test"]["loss"]), rel_tol=1e-6)
    assert metrics["test"]["answered"] == 4 and 0.0 <= metrics["test"]["rouge_l"] <= 1.0
    report = (run / "report.html").read_text()
    assert "Generated answers" in report and "base model" in report
    # eval, predict and generate all work on the run folder.
    assert main(["eval", str(run)]) == 0
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("what is the colour of sky\ntell me the colour of snow\n")
    assert main(["predict", str(run), str(prompts), "-o", str(tmp_path / "answers.jsonl")]) == 0
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [a["text"] for a in answers] == ["what is the colour of sky", "tell me the colour of snow"]
    assert all(isinstance(a["generated"], str) for a in answers)
    capsys.readouterr()
    assert main(["generate", str(run), "what is the colour of coal", "--max-new-tokens", "4", "--temperature", "0.8"]) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_lora_run_exports_a_merged_model_equal_to_base_plus_adapter(tmp_path, tiny_causal_lm):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    data = write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(40))
    assert main(causal_args(data, tiny_causal_lm, tmp_path / "runs", "lora", "--task", "causal-lm", "--method", "lora",
                            "--epochs", "1", "--no-baseline", "--eval-answers", "0")) == 0
    run = tmp_path / "runs" / "lora"
    ids = torch.tensor([[5, 9, 17, 33, 2]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(run / "model").eval()(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_causal_lm)
        adapted = PeftModel.from_pretrained(base, run / "adapter").eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()(ids).logits
    assert torch.allclose(merged, adapted, atol=1e-5)
    assert not torch.allclose(merged, plain, atol=1e-4)  # the adapter did change the model


# ---- check ---------------------------------------------------------------------------------------------

def test_check_reports_untrainable_rows_length_and_preview(tmp_path, tiny_causal_lm, capsys):
    rows = make_qa_rows(30)
    rows[2]["output"] = "  "  # empty response
    rows[5]["instruction"] = "what is the colour of " + "sky " * 80  # longer than max_length
    data = write_jsonl(tmp_path / "qa.jsonl", rows)
    chat = [{"messages": [{"role": "user", "content": "hi"}]}] + \
        [{"messages": [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]}
         for r in make_qa_rows(10, seed=1)]
    chat_file = write_jsonl(tmp_path / "chat.jsonl", chat)
    assert main(["check", data, "--task", "causal-lm", "--model", tiny_causal_lm, "--max-length", "64"]) == 0
    out = capsys.readouterr().out
    assert "1 rows dropped: empty response" in out and "qa.jsonl line 3" in out
    assert "longer than max_length 64" in out and "tokens would be cut" in out
    assert "exactly as the model sees it" in out and "<|im_start|>assistant" in out
    assert main(["check", chat_file, "--task", "causal-lm", "--model", tiny_causal_lm]) == 0
    assert "does not end with an assistant message" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "wizard", "content": "x"}]}])
    assert main(["check", bad, "--task", "causal-lm", "--model", tiny_causal_lm]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl line 1" in err and "unknown role 'wizard'" in err


def test_qlora_without_a_gpu_is_refused_before_anything_is_written(tmp_path, tiny_causal_lm, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = write_jsonl(tmp_path / "qa.jsonl", make_qa_rows(20))
    assert main(causal_args(data, tiny_causal_lm, tmp_path / "runs", "q", "--task", "causal-lm", "--method", "qlora")) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err and not (tmp_path / "runs").exists()


# ---- DPO ---------------------------------------------------------------------------------------------------

def test_dpo_loss_matches_a_hand_computed_example():
    from tunesmith.tasks.preference_losses import PairScores, pair_losses

    scores = PairScores(torch.tensor([-10.0]), torch.tensor([-12.0]), torch.tensor([3.0]), torch.tensor([3.0]),
                        torch.tensor([-11.0]), torch.tensor([-11.0]))
    loss, chosen_reward, rejected_reward = pair_losses("sigmoid", scores, beta=0.1)
    # rewards 0.1 * (−10 + 11) = 0.1 and 0.1 * (−12 + 11) = −0.1; loss = −log σ(0.2) = log(1 + e^−0.2)
    assert chosen_reward.item() == pytest.approx(0.1) and rejected_reward.item() == pytest.approx(-0.1)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)


def test_sequence_logps_sum_only_answer_tokens(tiny_causal_lm):
    from transformers import AutoModelForCausalLM

    from tunesmith.tasks.preference import sequence_logps

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm).eval()
    ids = torch.tensor([[3, 7, 11, 13, 17]])
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 13, 17]])
    with torch.no_grad():
        logp = model(ids).logits.log_softmax(-1)
        expected = logp[0, 2, 13] + logp[0, 3, 17]
        sums, counts = sequence_logps(model, ids, labels, torch.ones_like(ids))
        assert sums.item() == pytest.approx(expected.item(), abs=1e-5) and counts.item() == 2


def preference_rows(n: int, seed: int = 0) -> list[dict]:
    """The chosen answer names the colour; the rejected one dodges the question (learnable)."""
    return [{"prompt": f"{row['instruction']} {row['input']}".strip(), "chosen": row["output"],
             "rejected": "please tell me a short answer"} for row in make_qa_rows(n, seed)]


def test_dpo_prefers_chosen_answers_and_logs_reward_curves(tmp_path, tiny_causal_lm):
    data = write_jsonl(tmp_path / "pref.jsonl", preference_rows(80))
    assert main(causal_args(data, tiny_causal_lm, tmp_path / "runs", "dpo", "--task", "preference", "--method", "full",
                            "--epochs", "4", "--lr", "1e-2", "--eval-answers", "2", "--test-fraction", "0.2")) == 0
    run = tmp_path / "runs" / "dpo"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["baseline"]["loss"] == pytest.approx(math.log(2))
    assert metrics["test"]["loss"] < math.log(2) and metrics["test"]["reward_margin"] > 0
    assert metrics["test"]["reward_accuracy"] > 0.5
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert {"chosen_reward", "rejected_reward"} <= set(history[0])
    assert "Preference rewards" in (run / "report.html").read_text()
    # eval re-scores against the starting model loaded again: the same numbers.
    assert main(["eval", str(run)]) == 0
    again = json.loads((run / "metrics.json").read_text())["test"]
    assert again["reward_accuracy"] == pytest.approx(metrics["test"]["reward_accuracy"])
    assert again["loss"] == pytest.approx(metrics["test"]["loss"], abs=1e-4)


def test_chat_format_preference_pairs_use_the_shared_turns_as_prompt():
    from tunesmith.tasks.preference import row_to_pair

    prompt = [{"role": "user", "content": "colour of sky?"}]
    row = {"chosen": json.dumps(prompt + [{"role": "assistant", "content": "blue"}]),
           "rejected": json.dumps(prompt + [{"role": "assistant", "content": "red"}])}
    assert row_to_pair(row, "row 1") == {"prompt": prompt, "chosen": "blue", "rejected": "red"}


def test_interrupted_dpo_run_resumes_to_the_same_result(tmp_path, tiny_causal_lm, monkeypatch):
    """Resume rebuilds the reference log-probabilities from the pristine model, not the tuned one."""
    from conftest import interrupt_during_second_evaluation
    from tunesmith.tasks import TASKS

    data = write_jsonl(tmp_path / "pref.jsonl", preference_rows(40))
    common = ("--task", "preference", "--method", "full", "--epochs", "2", "--eval-every", "2", "--eval-answers", "0")
    assert main(causal_args(data, tiny_causal_lm, tmp_path, "straight", *common)) == 0
    interrupt_during_second_evaluation(monkeypatch, TASKS["preference"],
                                       causal_args(data, tiny_causal_lm, tmp_path, "cut", *common))
    assert main(["train", "--resume", str(tmp_path / "cut")]) == 0
    straight = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert resumed["test"]["loss"] == pytest.approx(straight["test"]["loss"], abs=1e-6)
    assert resumed["val_best"] == pytest.approx(straight["val_best"])


def test_answer_scores_and_stop_strings():
    from tunesmith.generation import answer_scores, cut_at_stop, rouge_l

    assert rouge_l("it is blue", "It is blue.") == 1.0
    # LCS of "the sky is blue" and "blue is the sky" is 2 words: P = R = 2/4.
    assert rouge_l("the sky is blue", "blue is the sky") == pytest.approx(0.5)
    assert rouge_l("", "x") == 0.0
    scores = answer_scores(["It  is blue", "red"], ["it is blue", "green"])
    assert scores["exact_match"] == 0.5 and scores["answered"] == 2
    assert cut_at_stop("it is blue\nUser: next", ["\nUser:", "###"]) == "it is blue"
