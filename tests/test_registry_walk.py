"""Every (task, method) pair in the registries, on a tiny model built in the test: it trains,
reloads from its run folder with the test metric it reported, predicts and answers through
the server; or it is refused before any work, with one line, exit code 2 and no run folder.

A new task or method joins this walk by registering itself: nothing here names them all.
The refusals are listed (REFUSED) so that a pair that stops working cannot hide as a refusal.
"""

from __future__ import annotations

import base64
import io
import json
import random

import numpy as np
import pytest

from conftest import CUES, make_qa_rows, make_rows, write_csv
from test_causal_lm import preference_rows, write_jsonl
from test_image_classification import make_folder, tiny_vit  # noqa: F401  (a fixture)
from test_pair_regression_multilabel import SCORE, _sentence, _write
from test_question_answering import qa_rows, tiny_qa_model  # noqa: F401  (a fixture)
from test_relation_extraction import duie_rows, tiny_re_model  # noqa: F401  (a fixture)
from test_sentence_embedding import pair_rows
from test_token_classification import make_sentences, tiny_ner_model, write_conll  # noqa: F401  (a fixture)
from tunesmith.cli import main
from tunesmith.methods import METHODS
from tunesmith.tasks import TASKS

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from tunesmith.serve.schemas import response_schema  # noqa: E402

KEY = "w" * 24

# Pairs refused up front, and a word of the reason each must give.
SEQUENCE_ONLY = "text-classification"
REFUSED = {
    **{(task, "qlora"): "CUDA" if task in ("causal-lm", "preference", "rl") else "for causal-lm, preference and rl"
       for task in TASKS},
    # A Llama has no biases to train and no new head (its head is pretrained).
    **{(task, method): why for task in ("causal-lm", "preference", "rl", "summarization", "translation")
       for method, why in (("bitfit", "no bias terms"), ("freeze", "no new head"))},
    # The tiny ViT: PEFT knows no IA3 targets for it, and adapters know BERT and Llama blocks.
    ("image-classification", "ia3"): "no IA3 target layers", ("image-classification", "adapter"): "no attention",
    **{(task, method): SEQUENCE_ONLY for task in TASKS if task != "text-classification"
       for method in ("few-shot", "zero-shot")},
    **{(task, method): "one label or score per text" for task in ("token-classification", "causal-lm", "preference", "rl",
                                                                  "image-classification", "question-answering",
                                                                  "summarization", "translation")
       for method in ("prefix", "prompt", "ptuning")},
    # The relation head reads the entity markers' states in input_ids; prompt methods feed embeddings.
    **{("relation-extraction", method): "entity markers" for method in ("prefix", "prompt", "ptuning")},
    # The ranking losses tune the body itself: full or LoRA.
    **{(task, method): "trains with full or lora" for task in ("sentence-embedding", "reranker", "reward-model")
       for method in ("adalora", "adapter", "bitfit", "freeze", "ia3", "prefix", "prompt", "ptuning")},
}


def _data(task: str, folder) -> tuple[str, list]:
    """Training data for the task, and two inputs to serve."""
    rng = random.Random(0)
    if task == "text-classification":
        return write_csv(folder / "d.csv", make_rows(12)), ["good film", "bad plot"]
    if task == "text-pair-classification":
        rows = [{"sentence1": _sentence(rng, a), "sentence2": _sentence(rng, b), "label": str(a == b)}
                for _ in range(4) for a in CUES for b in CUES]
        return (_write(folder / "p.csv", rows, ["sentence1", "sentence2", "label"]),
                [{"text": "good film", "text_pair": "great plot"}, {"text": "bad", "text_pair": "good"}])
    if task == "regression":
        rows = [{"text": _sentence(rng, c), "label": SCORE[c]} for _ in range(12) for c in CUES]
        return _write(folder / "r.csv", rows, ["text", "label"]), ["good film", "bad film"]
    if task == "multi-label-classification":
        rows = [{"text": " ".join(w for c in present for w in rng.sample(CUES[c], 1)), "labels": "|".join(present)}
                for present in (rng.sample(list(CUES), rng.choice([1, 2])) for _ in range(40))]
        return _write(folder / "m.csv", rows, ["text", "labels"]), ["good sad", "okay"]
    if task == "sentence-embedding":
        return write_jsonl(folder / "pairs.jsonl", pair_rows(60)), ["good film", "bad plot"]
    if task == "reranker":
        return (write_jsonl(folder / "pairs.jsonl", pair_rows(60)),
                [{"text": "good film", "text_pair": "great plot"}, {"text": "bad", "text_pair": "sad movie"}])
    if task == "relation-extraction":
        return (write_jsonl(folder / "rel.jsonl", duie_rows(40)),
                [{"text": "ada wrote notes .", "head": "ada", "tail": "notes"},
                 {"text": "bob was born in rome .", "head": {"start": 0, "end": 3, "type": "person"}, "tail": "rome"}])
    if task == "question-answering":
        context = "the colour of sky is blue ."
        return (write_jsonl(folder / "qa.jsonl", qa_rows(40, unanswerable=0.2)),
                [{"question": "what is the colour of sky", "context": context},
                 {"question": ["which thing is blue", "what is the colour of sky"], "context": context}])
    if task == "token-classification":
        return write_conll(folder / "ner.txt", make_sentences(40)), ["john smith visited paris .", "globex said"]
    if task == "image-classification":
        return make_folder(folder / "photos", per_class=10, corrupt=False), [_png((200, 30, 30)), _png((30, 30, 200))]
    if task == "causal-lm":
        return write_jsonl(folder / "qa.jsonl", make_qa_rows(24)), ["what is the colour of sky"]
    if task == "preference":
        return write_jsonl(folder / "pref.jsonl", preference_rows(24)), ["what is the colour of snow"]
    if task == "rl":  # prompts with a number for an answer, as the default reward reads
        rows = [{"prompt": f"what is the colour of {w} {n}", "answer": str(n)}
                for n, w in enumerate(["sky", "grass", "snow", "sun", "coal", "blood"] * 2)]
        return write_jsonl(folder / "problems.jsonl", rows), ["what is the colour of sky"]
    if task == "reward-model":
        return (write_jsonl(folder / "pref.jsonl", preference_rows(24)),
                [{"text": "what is the colour of sky", "text_pair": "it is blue"},
                 {"text": "what is the colour of snow", "text_pair": "please tell me a short answer"}])
    if task in ("summarization", "translation"):  # columns named by language (--source-lang en --target-lang fr)
        rows = [{"en": row["instruction"], "fr": row["output"]} for row in make_qa_rows(24)]
        return _write(folder / "t.csv", rows, ["en", "fr"]), ["what is the colour of sky"]
    raise AssertionError(f"no toy data for task {task}: add it here")


def _png(colour) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 12, 3), colour, dtype=np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def models(request, tiny_model, tiny_causal_lm):
    """The tiny model each task trains: a BERT, a Llama, a ViT (so adapters apply)."""
    return {"causal-lm": tiny_causal_lm, "preference": tiny_causal_lm, "rl": tiny_causal_lm, "summarization": tiny_causal_lm,
            "translation": tiny_causal_lm,
            "image-classification": request.getfixturevalue("tiny_vit"),
            "token-classification": request.getfixturevalue("tiny_ner_model"),
            "relation-extraction": request.getfixturevalue("tiny_re_model"),
            "question-answering": request.getfixturevalue("tiny_qa_model")}


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_and_method_runs_end_to_end_or_is_refused_up_front(task, method, tmp_path, models, tiny_model,
                                                                        capsys):
    data, inputs = _data(task, tmp_path)
    model = models.get(task, tiny_model)
    runs = tmp_path / "runs"
    # Small sizes for what this task and method read (the config refuses keys neither reads).
    small = {"prompt_tokens": 2, "lora_r": 2, "adapter_size": 4, "eval_answers": 0, "max_new_tokens": 3,
             "source_lang": "en", "target_lang": "fr", "prompt_template": "{source}"}  # the default fills 32 tokens
    own = {key for part in (TASKS[task], METHODS[method]) for section in part.settings for key in section.model_fields}
    sized = [arg for key, value in small.items() if key in own for arg in ("--" + key.replace("_", "-"), str(value))]
    code = main(["train", "--task", task, "--method", method, "--data", data, "--model", model,
                 "--output", str(runs), "--name", "r", "--max-length", "32", "--batch-size", "8", "--grad-accum", "1",
                 "--max-steps", "2", "--no-baseline", "--seed", "0", *sized])
    err = capsys.readouterr().err
    if (task, method) in REFUSED:
        lines = [line for line in err.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert REFUSED[task, method] in lines[0], lines[0]
        assert not runs.exists() or not any(runs.iterdir()), "a refused run left a folder behind"
        return
    assert code == 0, err

    from tunesmith.inference import Predictor
    from tunesmith.runs import Run
    from tunesmith.serve.app import create_app
    from tunesmith.serve.security import KeyRing
    from tunesmith.serve.server import run_info
    from tunesmith.serve.settings import ServeSettings

    run = Run(runs / "r")
    reported = json.loads(run.metrics_file.read_text())["test"]
    # Reloaded from the folder alone, the model scores the test split as training reported:
    # what the method added (adapters, a prompt, LoRA merged in) came back with it.
    predictor = Predictor.from_run(run)
    test = run.split("test")
    metric = TASKS[task].default_metric
    again = TASKS[task].metrics(test.labels, predictor.predict(test.texts), run.labels())
    assert again[metric] == pytest.approx(reported[metric], abs=1e-4), (metric, again, reported)

    settings = ServeSettings(run=str(run.path))
    with TestClient(create_app(predictor, settings, KeyRing([KEY]), run_info(run))) as client:
        answer = client.post("/v1/predict", json={"inputs": inputs, "parameters": {"max_new_tokens": 3}}
                             if TASKS[task].generative else {"inputs": inputs},
                             headers={"Authorization": f"Bearer {KEY}"})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()) == len(inputs)
    for one in answer.json():  # in the shape the task declares (and /openapi.json documents)
        response_schema(TASKS[task]).model_validate(one)
    if method == "full":  # every task tunes with full: its run checks what the task declares
        _declarations_are_true(task, run, tmp_path, capsys)


def _declarations_are_true(task: str, run, tmp_path, capsys) -> None:
    """What a task declares (tasks.TaskDefaults) is what the verbs do with its runs: a
    declared capability works on a tiny run, an undeclared one is refused with one line."""
    import importlib.util

    declared = TASKS[task]
    capsys.readouterr()
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("onnxscript"):
        code = main(["export", str(run.path)])
        err = capsys.readouterr().err
        assert (code == 0) == declared.exportable, err
        assert (run.model_dir / "model.onnx").is_file() == declared.exportable
        if not declared.exportable:
            assert "cannot be exported" in err
        code = main(["quantize", str(run.path), "--name", "r-int8"])
        err = capsys.readouterr().err
        assert (code == 0) == declared.quantisable, err
        if declared.quantisable:  # the int8 run answers like its source (test_compress.PROBABILITY_TOLERANCE)
            from tunesmith.inference import Predictor
            from tunesmith.runs import Run

            texts = run.split("test").texts[:4]
            source, int8 = (Predictor.from_run(r).predict(texts) for r in (run, Run(run.path.parent / "r-int8")))
            if hasattr(source, "thresholds"):  # multi-label: probabilities and the thresholds tuned on validation
                assert np.array_equal(int8.thresholds, source.thresholds)
                source, int8 = source.probs, int8.probs
            if hasattr(source, "queries"):  # sentence embeddings: the vectors (cosines 0.05 apart at most)
                source, int8 = source.queries, int8.queries
            elif hasattr(source, "scores"):  # a reranker: each query's candidate scores
                source, int8 = np.concatenate(source.scores), np.concatenate(int8.scores)
            elif hasattr(source, "chosen"):  # a reward model: each pair's two scores
                source, int8 = np.concatenate([source.chosen, source.rejected]), np.concatenate([int8.chosen,
                                                                                                 int8.rejected])
            elif isinstance(source[0], dict):  # extractive QA: each answer's probability
                source, int8 = [a["score"] for a in source], [a["score"] for a in int8]
            elif isinstance(source, list):  # NER: one array of tag probabilities per sentence
                source, int8 = np.concatenate(source), np.concatenate(int8)
            assert np.abs(np.asarray(int8) - np.asarray(source)).max() < 0.05, task
        else:
            assert "cannot be quantised" in err
    for vote, allowed in ((False, bool(declared.ensemble)), (True, "vote" in declared.ensemble)):
        name = f"ens-{vote}"
        code = main(["ensemble", str(run.path), str(run.path), "--name", name, "--output", str(tmp_path / "combined")]
                    + (["--vote"] if vote else []))
        err = capsys.readouterr().err
        assert (code == 0) == allowed, (vote, err)
        assert (tmp_path / "combined" / name).is_dir() == allowed
    from tunesmith.serve.server import check_settings
    from tunesmith.serve.settings import ServeSettings

    assert declared.servable  # every task serves today; a task that does not is refused by check_settings
    check_settings(ServeSettings(run=str(run.path), no_auth=True))
    if declared.generative:
        assert main(["generate", str(run.path), "what is the colour of sky", "--max-new-tokens", "2"]) == 0
    else:
        assert main(["generate", str(run.path), "hello"]) == 2
