"""`tunesmith generate RUN "prompt"` (or `--file prompts`): answers from a tuned causal LM.

One prompt streams its answer to the terminal as it is decoded; a file of prompts (one per
line in .txt, or rows in any layout `train` reads) is answered in batches, printed or
written to `-o` beside the input rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tunesmith.data.conversations import render_prompt
from tunesmith.errors import UserError
from tunesmith.generation import GenerationSettings, generate
from tunesmith.inference import Predictor, write_rows
from tunesmith.runs import open_finished


def generate_answers(run_path: str, prompt: str | None = None, file: str | None = None, output: str | None = None,
                     settings: GenerationSettings | None = None, system: str | None = None, encoding: str = "utf-8",
                     out=print, stream=None) -> list[str]:
    settings = settings or GenerationSettings()
    if (prompt is None) == (file is None):
        raise UserError('give one prompt ("...") or --file PROMPTS, not both and not neither')
    if output and Path(output).suffix.lower() not in (".csv", ".tsv", ".jsonl", ".json"):
        raise UserError(f"-o {output}: give an output file ending in .csv, .tsv or .jsonl")
    if settings.temperature < 0 or not 0 < settings.top_p <= 1:
        raise UserError("--temperature must be >= 0 and --top-p in (0, 1]")
    run = open_finished(run_path)
    task = run.settings().task
    predictor = Predictor.from_run(run)
    if not predictor.task.generative:
        raise UserError(f"{run_path}: a {task} run does not generate text; use `tunesmith predict` "
                        "(generate needs a causal-lm or preference run)")
    if prompt is not None:
        rows, conversations = [{"prompt": prompt}], [[{"role": "user", "content": prompt}]]
    else:
        rows, conversations = predictor.task.read_inputs(file, encoding, None)
    if system:
        conversations = [[{"role": "system", "content": system}] + [m for m in c if m["role"] != "system"]
                         for c in conversations]
    tokenizer = predictor.tokenizer.tokenizer
    prompts = [render_prompt(tokenizer, c) for c in conversations]
    streaming = prompt is not None and output is None and stream is not None
    answers = generate(predictor.model, tokenizer, prompts, settings, stream=stream if streaming else None)
    if output:
        write_rows(Path(output), [{**row, "generated": a} for row, a in zip(rows, answers)])
        out(f"wrote {len(answers)} answers to {output}")
    elif streaming:
        stream("\n")
    else:
        for c, answer in zip(conversations, answers):
            out(f"> {c[-1]['content']}\n{answer}\n")
    return answers


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use: tunesmith generate")
