"""The `tunesmith` command: a table of verbs, each a thin wrapper over one function.

Errors the user can fix are one line on stderr and exit code 2; --debug shows tracebacks.
"""

from __future__ import annotations

import argparse
import os
import sys

from tunesmith.errors import Interrupted, TrainingDiverged, UserError
from tunesmith.io import disk_full


def _quiet_libraries() -> None:
    # Offline first: never wait on the network for telemetry, and keep library chatter
    # (weight-loading reports, "you should train this model" notes) out of the user's way.
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import transformers

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notes, not the user's concern

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _given(args, model=None) -> dict:
    """The settings of `model` (TrainConfig by default) given on the command line: its flags
    that are not None (every config flag defaults to None, so a file's value is not overridden)."""
    from tunesmith.config import TrainConfig

    return {n: getattr(args, n) for n in (model or TrainConfig).model_fields if getattr(args, n, None) is not None}


def _require_optuna(verb: str) -> None:
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError(f"tunesmith {verb} needs Optuna: pip install 'tunesmith[tune]'") from None


def _cmd_check(args) -> int:
    from tunesmith.commands.check import check

    check(args.data, args.val_data, args.test_data, args.text_col, args.label_col, args.model,
          args.max_length, args.encoding, as_json=args.json, task=args.task, quality_checks=args.quality,
          near_threshold=args.near_threshold, lists=args.lists)
    return 0


def _cmd_train(args) -> int:
    from tunesmith.commands.train import train
    from tunesmith.config import load_config

    overrides = _given(args)
    config = args.config
    if config is not None and _is_data(config):
        # `tunesmith train data.csv` names the data, as `compare DATA` does; a config is YAML.
        if args.data is not None:
            raise UserError(f"train: {config} looks like data, and --data {args.data} is given too; "
                            "pass one data set (the positional argument is a YAML config or the data)")
        config, overrides["data"] = None, config
    cfg = load_config(config, overrides)
    run = train(cfg)
    print(f"finished: {run.path} (report: {run.report_file})")
    return 0


def _is_data(path: str) -> bool:
    """Whether a positional argument names data (a table or an image folder), not a YAML config."""
    from pathlib import Path

    from tunesmith.data.sources import TABLE_SUFFIXES

    return Path(path).suffix.lower() in TABLE_SUFFIXES or Path(path).is_dir()


def _cmd_eval(args) -> int:
    from tunesmith.commands.evaluate import evaluate

    evaluate(args.run, args.data, args.text_col, args.label_col, args.encoding, rank=args.rank,
             positive_label=args.positive_label)
    return 0


def _cmd_predict(args) -> int:
    from tunesmith.commands.predict import predict

    predict(args.run, args.input, args.output, args.text_col, args.encoding, args.batch_size, args.rank,
            args.positive_label, backend=args.backend)
    return 0


def _cmd_export(args) -> int:
    from tunesmith.commands.export import export

    export(args.run, args.format)
    return 0


def _cmd_quantize(args) -> int:
    from tunesmith.commands.quantize import quantize

    quantize(args.run, args.mode, args.backend, args.per_channel, args.name, args.output)
    return 0


def _cmd_distill(args) -> int:
    from tunesmith.commands.distill import distill

    distill(args.run, args.student_layers, args.unlabeled, args.augment_copies, args.temperature, args.alpha,
            args.epochs, args.lr, args.name, args.output, hidden_weight=args.hidden_weight)
    return 0


def _cmd_assistant(args) -> int:
    from tunesmith.commands import assistant

    if args.action == "build":
        from tunesmith.assistant.build import build

        build(args.kb, args.out, args.intents, args.generator, args.model, args.epochs, args.lr, args.target,
              keep_in_scope=args.keep_in_scope)
    elif args.action == "ask":
        assistant.ask(args.folder, args.question, args.json)
    else:
        assistant.serve(args.folder, args.host, args.port)
    return 0


def _cmd_ui(args) -> int:
    from tunesmith.commands.ui import ui

    ui(args.runs, args.host, args.port, args.data_dirs)
    return 0


def _cmd_monitor(args) -> int:
    from tunesmith.commands.monitor import monitor, serve_monitor
    from tunesmith.durations import parse_duration

    if (args.source is None) == (not args.serve):
        raise UserError("monitor: give --source FILE|DIR|- to read texts, or --serve to take them over HTTP (one)")
    if args.serve:
        serve_monitor(args.sentiment, args.store, args.rules, args.topics_from, args.keywords, args.topic,
                      args.negative_label, args.alerts, args.webhook, args.host, args.port, args.retain)
        return 0
    monitor(args.sentiment, args.source, args.store, args.rules, args.topics_from, args.keywords, args.topic,
            args.negative_label, args.text_col, args.alerts, args.webhook, args.follow,
            parse_duration(args.poll, "--poll"), args.batch, args.report, args.retain)
    return 0


def _cmd_prune(args) -> int:
    from tunesmith.commands.distill import prune

    prune(args.run, args.sparsity, args.drop_layers, args.epochs, args.lr, args.temperature, args.alpha, args.name,
          args.output, hidden_weight=args.hidden_weight)
    return 0


def _cmd_generate(args) -> int:
    from tunesmith.commands.generate import generate_answers
    from tunesmith.generation import GenerationSettings

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                                  stop=args.stop or [], seed=args.seed)

    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    generate_answers(args.run, args.prompt, args.file, args.output, settings, args.system, args.encoding,
                     stream=stream)
    return 0


def _cmd_soup(args) -> int:
    from tunesmith.commands.soup import soup

    soup(args.runs, args.name, args.output)
    return 0


def _cmd_ensemble(args) -> int:
    from tunesmith.commands.ensemble import ensemble

    ensemble(args.runs, args.name, args.output, vote=args.vote)
    return 0


def _cmd_compare(args) -> int:
    from tunesmith.commands.compare import compare
    from tunesmith.config import read_yaml_mapping

    if args.runs:  # finished runs measured side by side (a model and its compressed copies)
        from tunesmith.commands.compare import compare_runs

        compare_runs(args.runs, args.output_folder if args.output_folder != "runs/compare" else None)
        return 0
    if not args.data:
        raise UserError("compare: give training DATA and --methods, or --runs A,B of finished runs")
    values = read_yaml_mapping(args.config) if args.config else {}
    listed = values.pop("methods", None)  # the config may list the methods itself
    methods = args.methods or listed
    if not methods or not isinstance(methods, list):
        raise UserError("compare: give --methods full,lora,... or a `methods:` list in --config")
    values.update(_given(args))
    values["data"] = args.data
    compare(values, [str(m) for m in methods], args.output_folder)
    return 0


def _cmd_tune(args) -> int:
    _require_optuna("tune")
    from tunesmith.commands.tune import tune

    tune(args.source, _given(args), trials=args.trials, timeout=args.timeout, sampler=args.sampler, pruner=args.pruner,
         jobs=args.n_jobs, storage=args.storage, keep=args.keep, folder=args.study_folder,
         sampler_seed=args.sampler_seed)
    return 0


def _cmd_auto(args) -> int:
    _require_optuna("auto")  # its last rung is a search
    from tunesmith.commands.auto import auto

    auto(args.data, _given(args), target=args.target, budget=args.budget, folder=args.folder)
    return 0


def _cmd_quickstart(args) -> int:
    from tunesmith.commands.quickstart import quickstart

    quickstart(args.output)
    return 0


def _cmd_serve(args) -> int:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("tunesmith serve needs FastAPI and uvicorn: pip install 'tunesmith[serve]'") from None
    from tunesmith.serve.server import serve
    from tunesmith.serve.settings import ServeSettings

    serve(ServeSettings(**_given(args, ServeSettings)))
    return 0


def _add_new_run_flags(p, default_name: str) -> None:
    """Where quantize, distill and prune write their new run folder."""
    p.add_argument("--name", help=f"name of the new run folder (default: {default_name})")
    p.add_argument("--output", help="folder for the new run (default: beside the source run)")


def _add_student_flags(p, epochs: str) -> None:
    """The training flags distill and prune share (compress/distill.py)."""
    p.add_argument("--epochs", type=float, help=f"passes over the training texts (default: {epochs})")
    p.add_argument("--lr", type=float, help="learning rate (default: 1e-4)")
    p.add_argument("--temperature", type=float, default=2.0,
                   help="softens teacher and student distributions in the soft loss (default: 2)")
    p.add_argument("--alpha", type=float, default=0.5,
                   help="the soft (teacher) loss's share; the rest is cross-entropy on true labels (default: 0.5)")
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="weight of a third loss: each student layer's output against the teacher layer it was copied "
                        "from (relative squared error over real tokens; one teacher pass per step). Default 0: off")


def build_parser() -> argparse.ArgumentParser:
    from tunesmith.config import add_config_flags

    parser = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune pretrained models on your labeled data.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    p = verbs.add_parser("quickstart", help="fine-tune MiniLM on tweet sentiment, offline, in minutes")
    p.add_argument("--output", default="runs", help="folder for the run folder (default: runs)")
    p.set_defaults(func=_cmd_quickstart)

    p = verbs.add_parser("check", help="validate data before spending compute")
    p.add_argument("data", help="CSV/TSV/JSONL/Parquet file, CoNLL file or folder, or built-in dataset name")
    p.add_argument("--task", default=None, help="task the data is for (default: inferred from the data: image "
                   "folder -> image-classification, CoNLL -> token-classification, else text-classification)")
    p.add_argument("--val-data"); p.add_argument("--test-data")
    p.add_argument("--text-col"); p.add_argument("--label-col")
    p.add_argument("--model", default=None, help="tokenizer for the length check (default: the task's, minilm for text)")
    p.add_argument("--max-length", type=int, default=None,
                   help="truncation length to check against (default: the task's, 128; 512 for causal-lm)")
    p.add_argument("--encoding", default="utf-8")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True,
                   help="likely label errors, near-duplicates across splits, outliers and other-script rows, from "
                        "the model's frozen features (seconds per 10,000 rows; --no-quality: exact checks only)")
    p.add_argument("--near-threshold", type=float, default=0.95,
                   help="cosine similarity at and above which two texts are near-duplicates (default: 0.95)")
    p.add_argument("--lists", default=None, metavar="DIR",
                   help="folder for the full lists (suspect_labels.csv, near_duplicates.csv, outliers.csv) "
                        "(default: runs/check-<data name>)")
    p.set_defaults(func=_cmd_check)

    p = verbs.add_parser("train", help="fine-tune a model; writes a run folder")
    p.add_argument("config", nargs="?",
                   help="YAML config file (flags override its values), or the training data itself")
    add_config_flags(p)
    p.set_defaults(func=_cmd_train)

    from tunesmith.config import _comma_list

    p = verbs.add_parser("compare", help="train several methods on the same splits, or measure finished runs side by "
                                         "side (--runs); one table")
    p.add_argument("data", nargs="?", help="training data, as for train --data")
    p.add_argument("--runs", type=_comma_list, metavar="A,B",
                   help="finished runs of the same splits (a model and its quantised, pruned or distilled copies): "
                        "size, peak memory, p50/p95 latency, texts/s at batch 32 and on the whole test file, metric")
    p.add_argument("--methods", type=_comma_list, metavar="A,B",
                   help="methods to compare, e.g. full,lora,ia3,bitfit,freeze (or a `methods:` list in --config)")
    p.add_argument("--config", help="YAML config shared by every method; flags override it")
    p.add_argument("--output-folder", default="runs/compare", help="folder for the table, chart and runs")
    add_config_flags(p, skip=("data", "method", "name", "resume", "output"))
    p.set_defaults(func=_cmd_compare)

    p = verbs.add_parser("tune", help="hyperparameter search over training runs (Optuna); resumable",
                         description="Search training settings on the validation split; the best trial is scored "
                         "on test once. The space is the config's `search:` block (ranges and choices of any "
                         "training key, the method too), else the method's own (learning rate and its size knob). "
                         "Running the same command again continues the study.")
    p.add_argument("source", metavar="DATA|CONFIG", help="training data, or a YAML config (with an optional search: block)")
    p.add_argument("--trials", type=int, default=20, help="trials in the study, over every worker and restart (default: 20)")
    p.add_argument("--timeout", help="stop starting trials after this long, e.g. 30m, 2h (default: none)")
    p.add_argument("--sampler", choices=("tpe", "random", "grid"), default="tpe",
                   help="tpe (default), random, or grid (every key needs choices or a step)")
    p.add_argument("--pruner", choices=("median", "hyperband", "none"), default="median",
                   help="stop trials whose validation metric trails the others' after an evaluation (default: median)")
    p.add_argument("--n-jobs", type=int, default=1, help="worker processes sharing the study (default: 1)")
    p.add_argument("--storage", help="study storage URL (default: sqlite in the study folder); "
                   "postgresql://... lets several machines share one study")
    p.add_argument("--study-folder", help="folder of the study (default: <output>/tune-<data or config name>)")
    p.add_argument("--keep", choices=("all", "best"), default="all",
                   help="keep every trial's run folder (default) or only the best one")
    p.add_argument("--sampler-seed", type=int, help="seed of the sampler, for a reproducible single-worker study")
    add_config_flags(p, skip=("name", "resume"))
    p.set_defaults(func=_cmd_tune)

    p = verbs.add_parser("auto", help="the cheapest model that meets a target, within a time budget",
                         description="Climb from cheap to dear (zero-shot when labels have names, few-shot on small "
                         "data, freeze, adapter, lora, full, then a short tune of the best), estimating each rung's "
                         "time so the climb stays within --budget, and stop at the first rung whose validation "
                         "metric meets --target. Keeps the winner as a run folder; its test split is scored once.")
    p.add_argument("data", help="training data, as for train --data")
    p.add_argument("--target", help='goal on the validation split, e.g. "macro_f1>=0.9" (default: none: climb every rung)')
    p.add_argument("--budget", help="time for the whole climb, e.g. 30m, 2h (default: none)")
    p.add_argument("--folder", help="folder of the rungs' runs (default: <output>/auto-<data name>)")
    add_config_flags(p, skip=("data", "method", "name", "resume"))
    p.set_defaults(func=_cmd_auto)

    p = verbs.add_parser("eval", help="metrics and report of a run on a test set")
    p.add_argument("run", help="run folder")
    p.add_argument("data", nargs="?", help="test data (default: the run's own held-out test split)")
    p.add_argument("--text-col"); p.add_argument("--label-col"); p.add_argument("--encoding", default="utf-8")
    p.add_argument("--rank", action="store_true",
                   help="pair runs: NDCG@k, MRR and recall@k per query (first text), against popularity and the "
                        "untuned similarity")
    p.add_argument("--positive-label", help="with --rank on a pair classifier: the label that means relevant")
    p.set_defaults(func=_cmd_eval)

    p = verbs.add_parser("predict", help="batch predictions to CSV/JSONL")
    p.add_argument("run", help="run folder")
    p.add_argument("input", help="CSV/TSV/JSONL/Parquet/TXT file of texts (pairs: two text columns; NER: also CoNLL)")
    p.add_argument("-o", "--output", required=True, help="output file (.csv, .tsv or .jsonl)")
    p.add_argument("--text-col"); p.add_argument("--encoding", default="utf-8")
    p.add_argument("--batch-size", type=int, default=32, help="texts per inference batch (default: 32)")
    p.add_argument("--rank", action="store_true",
                   help="pair runs: sort candidates best first within each query / user profile, with a rank column")
    p.add_argument("--positive-label", help="with --rank on a pair classifier: the label that means a good match")
    p.add_argument("--backend", choices=("auto", "torch", "onnx"), default="auto",
                   help="auto (default: a quantised run's own backend, else torch), torch, or onnx: the run's ONNX "
                        "export under ONNX Runtime (`tunesmith export` makes it)")
    p.set_defaults(func=_cmd_predict)

    p = verbs.add_parser("export", help="write the run's model as ONNX (model/model.onnx), checked against PyTorch")
    p.add_argument("run", help="finished run folder")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default: onnx)")
    p.set_defaults(func=_cmd_export)

    p = verbs.add_parser("quantize", help="an int8 copy of a finished run, as a new run folder with a cost table")
    p.add_argument("run", help="finished run folder (a trained, pruned or distilled run)")
    p.add_argument("--mode", choices=("dynamic", "static"), default="dynamic",
                   help="dynamic (default: activation ranges per batch, nothing to calibrate) or static (ranges "
                        "calibrated on 256 texts of the run's training split; ONNX only)")
    p.add_argument("--backend", choices=("auto", "onnx", "torch"), default="auto",
                   help="auto (default: ONNX Runtime where the run exports and it is installed, else PyTorch), onnx "
                        "(an int8 graph, ~4x smaller on disk), torch (int8 linear layers made at load)")
    p.add_argument("--per-channel", action="store_true",
                   help="one weight scale per output row instead of per matrix: more accurate, a little slower")
    _add_new_run_flags(p, "<run>-int8")
    p.set_defaults(func=_cmd_quantize)

    p = verbs.add_parser("distill", help="train a student with fewer layers against a run's model (new run folder)")
    p.add_argument("run", help="finished run folder: the teacher")
    p.add_argument("--student-layers", type=int, default=3,
                   help="layers the student keeps, evenly spread over the teacher's (default: 3)")
    p.add_argument("--unlabeled", help="a file of extra texts (same formats as predict) that the teacher labels")
    p.add_argument("--augment-copies", type=int, default=0,
                   help="edited copies of each training text for the teacher to label (default: 0)")
    _add_student_flags(p, "3 (distill)")
    _add_new_run_flags(p, "<run>-<N>layers")
    p.set_defaults(func=_cmd_distill)

    p = verbs.add_parser("prune", help="remove the least important feed-forward neurons or layers, then recover")
    p.add_argument("run", help="finished run folder")
    p.add_argument("--sparsity", type=float, default=0.3,
                   help="share of every layer's feed-forward neurons to remove, least important first (default: 0.3)")
    p.add_argument("--drop-layers", type=int, default=0,
                   help="also remove this many whole layers, those that change their input least (default: 0)")
    _add_student_flags(p, "1 (recovery)")
    _add_new_run_flags(p, "<run>-pruned")
    p.set_defaults(func=_cmd_prune)

    p = verbs.add_parser("assistant", help="customer-service assistant: intent templates, retrieval, generation, hand-off")
    actions = p.add_subparsers(dest="action", required=True)
    b = actions.add_parser("build", help="fine-tune the retriever on a knowledge base, calibrate, write a folder")
    b.add_argument("--kb", required=True, help="CSV/TSV/JSONL of question and answer (optional intent: its template)")
    b.add_argument("--out", required=True, help="folder for the assistant")
    b.add_argument("--intents", help="finished text-classification run that names each question's intent")
    b.add_argument("--generator", help="finished causal-lm run that writes answers from retrieved passages")
    b.add_argument("--model", help="retriever's base model (default: the intent run's, else minilm)")
    b.add_argument("--epochs", type=int, default=1, help="bi-encoder fine-tuning passes (default: 1)")
    b.add_argument("--lr", type=float, default=2e-5, help="bi-encoder learning rate (default: 2e-5)")
    b.add_argument("--target", type=float, default=0.9,
                   help="accuracy the thresholds must reach on held-out data (coverage is traded for it; default 0.9)")
    b.add_argument("--keep-in-scope", type=float, default=0.95,
                   help="share of the intent run's validation questions the out-of-scope check lets through; lower "
                        "catches more out-of-scope questions and answers fewer in-scope ones (default: 0.95)")
    b.set_defaults(func=_cmd_assistant)
    a = actions.add_parser("ask", help="answer one question from the command line")
    a.add_argument("folder", help="assistant folder")
    a.add_argument("question")
    a.add_argument("--json", action="store_true", help="print the answer as JSON")
    a.set_defaults(func=_cmd_assistant)
    v = actions.add_parser("serve", help="answer questions over HTTP: POST /v1/ask")
    v.add_argument("folder", help="assistant folder")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    v.add_argument("--port", type=int, default=8091, help="port (default: 8091)")
    v.set_defaults(func=_cmd_assistant)

    p = verbs.add_parser("ui", help="web dashboard over a runs folder: runs table, live curves, compare, try it, "
                         "start and cancel training")
    p.add_argument("runs", nargs="?", default="runs", help="folder that holds the run folders (default: runs)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1; another needs TUNESMITH_API_KEYS)")
    p.add_argument("--port", type=int, default=8095, help="port (default: 8095)")
    p.add_argument("--data-dir", action="append", dest="data_dirs", metavar="FOLDER",
                   help="a folder whose data files the start-a-run form may use, besides the runs folder (repeatable)")
    p.set_defaults(func=_cmd_ui)

    p = verbs.add_parser("monitor", help="score a stream of texts per topic over time and alert on negative surges")
    p.add_argument("--sentiment", required=True, help="finished sentiment run folder (its labels name the negative one)")
    p.add_argument("--source",
                   help="CSV/TSV/JSONL file, a folder of them, or - (standard input); rows with a text and a time")
    p.add_argument("--serve", action="store_true",
                   help="take texts over HTTP instead (POST /v1/ingest; GET /v1/topics, /metrics); API keys from "
                        "TUNESMITH_API_KEYS, required off loopback")
    p.add_argument("--host", default="127.0.0.1", help="with --serve: address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="with --serve: port (default: 8090)")
    p.add_argument("--store", default="monitor.db",
                   help="where items, read positions and alerts are kept: a SQLite file, or a PostgreSQL URL "
                        "(postgresql://user:password@host/db; pip install 'tunesmith[postgres]'); the same store "
                        "continues a stopped monitor (default: monitor.db)")
    p.add_argument("--rules", help="alert rules (YAML: window, threshold and surge rules; see docs). Default: 60%% "
                                   "negative, or a surge of z >= 3, in 1-hour windows of at least 20 texts")
    p.add_argument("--topics-from", help="a field of the stream that names each text's topic (e.g. ticker)")
    p.add_argument("--keywords", help="YAML file: topic -> words or cashtags a text of that topic contains")
    p.add_argument("--topic", help="finished topic-classifier run folder that gives each text its topic")
    p.add_argument("--negative-label", help="the sentiment run's negative label (default: read from the label names)")
    p.add_argument("--text-col", help="the text field (default: text, content, sentence, message, tweet, ...)")
    p.add_argument("--alerts", help="append every alert as one JSON line to this file")
    p.add_argument("--webhook", help="POST every alert here (https), signed with TUNESMITH_WEBHOOK_SECRET")
    p.add_argument("--follow", action="store_true", help="keep reading as files grow, until Ctrl-C")
    p.add_argument("--poll", default="2s", help="with --follow: how often to look for new lines (default: 2s)")
    p.add_argument("--batch", type=int, default=64, help="texts scored together (default: 64)")
    p.add_argument("--report", help="write an HTML report (topics over time, alerts marked) here at the end")
    p.add_argument("--retain", default="90d",
                   help="keep texts this long in event time (before the newest text's time), then delete them; "
                        "alerts stay. At least the rules' look-back; 'forever' keeps all (default: 90d)")
    p.set_defaults(func=_cmd_monitor)

    p = verbs.add_parser("soup", help="average the weights of runs from the same base model into a new run")
    p.add_argument("runs", nargs="+", help="finished run folders (same task, base model and splits)")
    p.add_argument("--name", required=True, help="name of the new run folder")
    p.add_argument("--output", default="runs", help="folder for the new run (default: runs)")
    p.set_defaults(func=_cmd_soup)

    p = verbs.add_parser("ensemble", help="combine runs into one run: mean of their outputs, or majority vote")
    p.add_argument("runs", nargs="+", help="finished run folders (same task, labels and splits)")
    p.add_argument("--name", required=True, help="name of the new run folder")
    p.add_argument("--output", default="runs", help="folder for the new run (default: runs)")
    p.add_argument("--vote", action="store_true", help="majority vote of labels instead of mean probabilities")
    p.set_defaults(func=_cmd_ensemble)

    p = verbs.add_parser("generate", help="answers from a tuned causal LM (streams one prompt to the terminal)")
    p.add_argument("run", help="run folder of a causal-lm or preference run")
    p.add_argument("prompt", nargs="?", help="the prompt (a user message); or use --file")
    p.add_argument("--file", help="prompts: a .txt file (one per line) or rows in any layout train reads")
    p.add_argument("-o", "--output", help="write answers beside the prompt rows (.csv, .tsv or .jsonl)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest answer in tokens (default: 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy, deterministic (default); >0: sampling")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass, with --temperature > 0 (default: 1)")
    p.add_argument("--stop", action="append", help="stop at this string (repeatable); it is not included")
    p.add_argument("--system", help="a system message put before every prompt")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--encoding", default="utf-8")
    p.set_defaults(func=_cmd_generate)

    from tunesmith.serve.settings import ServeSettings

    p = verbs.add_parser("serve", help="serve a run over HTTP (API keys, limits, metrics, micro-batching)")
    p.add_argument("run", help="run folder")
    add_config_flags(p, ServeSettings, skip=("run",))
    p.set_defaults(func=_cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (TrainingDiverged, Interrupted) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in tunesmith, not the user's input
        if args.debug:
            raise
        if disk_full(exc):
            where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
            print(f"error: the disk is full{where}; free some space and run the same command again "
                  "(an interrupted training run continues with `tunesmith train --resume RUN`)", file=sys.stderr)
            return 2
        print(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
