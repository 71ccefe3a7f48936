"""The `tunesmith` command: a table of verbs, each a thin wrapper over one function.

Errors the user can fix are one line on stderr and exit code 2; --debug shows tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Verb:
    """One `tunesmith VERB`: its flags come from the typed settings `args` (a pydantic model whose
    field descriptions are the --help), and `run` ("module:function") is called with them."""

    name: str
    help: str
    args: str  # "module:Model"
    run: str  # "module:function", called with the validated settings
    training: tuple[str, ...] | None = None  # also TrainConfig's flags, less these; given ones go in args.training
    needs: str | None = None  # an extra the verb cannot run without (its import name: its pip extra)
    description: str | None = None
    actions: tuple["Verb", ...] = ()  # sub-verbs (`assistant build|ask|serve`)


C = "tunesmith.commands"
VERBS = (
    Verb("quickstart", "fine-tune MiniLM on tweet sentiment, offline, in minutes",
         f"{C}.quickstart:QuickstartArgs", f"{C}.quickstart:quickstart"),
    Verb("check", "validate data before spending compute", f"{C}.check:CheckArgs", f"{C}.check:check"),
    Verb("train", "fine-tune a model; writes a run folder", f"{C}.train:TrainArgs", f"{C}.train:main", training=()),
    Verb("compare", "train several methods on the same splits, or measure finished runs side by side (--runs); "
         "one table", f"{C}.compare:CompareArgs", f"{C}.compare:main",
         training=("data", "method", "name", "resume", "output")),
    Verb("tune", "hyperparameter search over training runs (Optuna); resumable", f"{C}.tune:TuneArgs",
         f"{C}.tune:tune", training=("name", "resume"), needs="optuna",
         description="Search training settings on the validation split; the best trial is scored on test once. The "
         "space is the config's `search:` block (ranges and choices of any training key, the method too), else the "
         "method's own (learning rate and its size knob). Running the same command again continues the study."),
    Verb("auto", "the cheapest model that meets a target, within a time budget", f"{C}.auto:AutoArgs",
         f"{C}.auto:auto", training=("data", "method", "name", "resume"), needs="optuna",
         description="Climb from cheap to dear (zero-shot when labels have names, few-shot on small data, freeze, "
         "adapter, lora, full, then a short tune of the best), estimating each rung's time so the climb stays within "
         "--budget, and stop at the first rung whose validation metric meets --target. Keeps the winner as a run "
         "folder; its test split is scored once."),
    Verb("eval", "metrics and report of a run on a test set", f"{C}.evaluate:EvalArgs", f"{C}.evaluate:evaluate"),
    Verb("predict", "batch predictions to CSV/JSONL", f"{C}.predict:PredictArgs", f"{C}.predict:predict"),
    Verb("export", "write the run's model as ONNX (model/model.onnx), checked against PyTorch",
         f"{C}.export:ExportArgs", f"{C}.export:export"),
    Verb("quantize", "an int8 copy of a finished run, as a new run folder with a cost table",
         f"{C}.quantize:QuantizeArgs", f"{C}.quantize:quantize"),
    Verb("distill", "train a student with fewer layers against a run's model (new run folder)",
         f"{C}.distill:DistillArgs", f"{C}.distill:distill"),
    Verb("prune", "remove the least important feed-forward neurons or layers, then recover",
         f"{C}.distill:PruneArgs", f"{C}.distill:prune"),
    Verb("assistant", "customer-service assistant: intent templates, retrieval, generation, hand-off", "", "",
         actions=(
             Verb("build", "fine-tune the retriever on a knowledge base, calibrate, write a folder",
                  "tunesmith.assistant.build:BuildArgs", "tunesmith.commands.assistant:build"),
             Verb("ask", "answer one question from the command line", f"{C}.assistant:AskArgs", f"{C}.assistant:ask"),
             Verb("serve", "answer questions over HTTP: POST /v1/ask", f"{C}.assistant:AssistantServeArgs",
                  f"{C}.assistant:serve"))),
    Verb("ui", "web dashboard over a runs folder: runs table, live curves, compare, try it, start and cancel training",
         f"{C}.ui:UiArgs", f"{C}.ui:ui"),
    Verb("monitor", "score a stream of texts per topic over time and alert on negative surges",
         f"{C}.monitor:MonitorArgs", f"{C}.monitor:main"),
    Verb("soup", "average the weights of runs from the same base model into a new run", f"{C}.soup:SoupArgs",
         f"{C}.soup:soup"),
    Verb("ensemble", "combine runs into one run: mean of their outputs, or majority vote",
         f"{C}.ensemble:EnsembleArgs", f"{C}.ensemble:ensemble"),
    Verb("generate", "answers from a tuned causal LM (streams one prompt to the terminal)",
         f"{C}.generate:GenerateArgs", f"{C}.generate:main"),
    Verb("serve", "serve a run over HTTP (API keys, limits, metrics, micro-batching)",
         "tunesmith.serve.settings:ServeSettings", f"{C}.serve:main"),
)


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _add_verb(verbs, verb: Verb) -> None:
    from tunesmith.commands.flags import add_flags
    from tunesmith.config import TrainConfig

    parser = verbs.add_parser(verb.name, help=verb.help, description=verb.description)
    if verb.actions:
        actions = parser.add_subparsers(dest="action", required=True)
        for action in verb.actions:
            _add_verb(actions, action)
        return
    model = _load(verb.args)
    add_flags(parser, model, skip=tuple(n for n, f in model.model_fields.items()
                                        if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("hidden")))
    if verb.training is not None:
        add_flags(parser, TrainConfig, skip=verb.training)
    parser.set_defaults(verb_spec=verb)


def _run(args) -> int:
    from tunesmith.commands.flags import given, settings_of
    from tunesmith.config import TrainConfig

    verb = args.verb_spec
    if verb.needs and importlib.util.find_spec(verb.needs) is None:
        raise UserError(f"tunesmith {verb.name} needs {verb.needs}: pip install 'tunesmith[{EXTRAS[verb.needs]}]'")
    settings = settings_of(args, _load(verb.args))
    if verb.training is not None:
        settings = settings.model_copy(update={"training": given(args, TrainConfig)})
    _load(verb.run)(settings)
    return 0


EXTRAS = {"optuna": "tune"}  # import name -> the pip extra that brings it


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunesmith", description="Fine-tune pretrained models on your labeled data.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for verb in VERBS:
        _add_verb(verbs, verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return _run(args)
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
