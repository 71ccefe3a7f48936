"""`tunesmith generate RUN "prompt"` (or `--file prompts`): answers from a tuned causal LM.

One prompt streams its answer to the terminal as it is decoded; a file of prompts (one per
line in .txt, or rows in any layout `train` reads) is answered in batches, printed or
written to `-o` beside the input rows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional, training_field
from tunesmith.errors import UserError
from tunesmith.generation import GenerationSettings
from tunesmith.forward import write_rows
from tunesmith.inference import Predictor
from tunesmith.runs import open_finished


class GenerateArgs(BaseModel):
    """`tunesmith generate RUN "PROMPT"` or `--file PROMPTS`."""

    run: str = Field(description="run folder of a causal-lm or preference run", json_schema_extra=positional())
    prompt: Optional[str] = Field(None, description="the prompt (a user message); or use --file",
                                  json_schema_extra=positional())
    file: Optional[str] = Field(None, description="prompts: a .txt file (one per line) or rows in any layout train "
                                "reads")
    output: Optional[str] = Field(None, description="write answers beside the prompt rows (.csv, .tsv or .jsonl)",
                                  json_schema_extra={"flags": ["-o", "--output"]})
    max_new_tokens: int = Field(128, gt=0, description="longest answer in tokens")
    temperature: float = Field(0.0, description="0: greedy, deterministic; >0: sampling")
    top_p: float = Field(1.0, description="nucleus sampling mass, with --temperature > 0")
    stop: Optional[list[str]] = Field(None, description="stop at this string (repeatable); it is not included",
                                      json_schema_extra={"repeat": True})
    system: Optional[str] = Field(None, description="a system message put before every prompt")
    seed: int = Field(0, description="sampling seed")
    encoding: str = training_field("encoding")

    def generation(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                                  stop=self.stop or [], seed=self.seed)


def main(args: GenerateArgs) -> None:
    """The verb: one prompt's answer streamed to the terminal as it is decoded."""

    def stream(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    generate_answers(args, stream=stream)


def generate_answers(args: GenerateArgs, out=print, stream=None) -> list[str]:
    run_path, prompt, file, output, system = args.run, args.prompt, args.file, args.output, args.system
    settings = args.generation()
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
                        "(generate needs a causal-lm, preference, summarization or translation run)")
    if prompt is not None:
        rows, conversations = [{"prompt": prompt}], [[{"role": "user", "content": prompt}]]
    else:
        rows, conversations = predictor.task.read_inputs(file, args.encoding, None)
    if system:
        conversations = [[{"role": "system", "content": system}] + [m for m in c if m["role"] != "system"]
                         for c in conversations]
    processor = predictor.tokenizer  # the chat format, or a text-to-text run's template (and model family)
    prompts = [processor.prompt_text(c) for c in conversations]
    streaming = prompt is not None and output is None and stream is not None
    answers = processor.generate(predictor.model, prompts, settings, stream=stream if streaming else None)
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
