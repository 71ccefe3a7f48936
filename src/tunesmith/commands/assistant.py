"""`tunesmith assistant build|ask|serve`: a customer-service assistant over trained runs and a
knowledge base (tunesmith.assistant)."""

from __future__ import annotations

import json
from dataclasses import asdict

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional


class AskArgs(BaseModel):
    """`tunesmith assistant ask FOLDER QUESTION`."""

    folder: str = Field(description="assistant folder", json_schema_extra=positional())
    question: str = Field(description="the question", json_schema_extra=positional())
    as_json: bool = Field(False, description="print the answer as JSON", json_schema_extra={"flags": ["--json"]})


class AssistantServeArgs(BaseModel):
    """`tunesmith assistant serve FOLDER`."""

    folder: str = Field(description="assistant folder", json_schema_extra=positional())
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8091, ge=1, le=65535, description="port")


def build(args, log=print):
    """`tunesmith assistant build`: the folder, its retriever trained by `tunesmith train` unless given."""
    from tunesmith.assistant.build import build as build_folder
    from tunesmith.commands.train import train

    return build_folder(args, train, log)


def ask(args: AskArgs, out=print) -> dict:
    from tunesmith.assistant.router import Assistant

    answer = asdict(Assistant(_existing(args.folder)).answer(args.question))
    if args.as_json:
        out(json.dumps(answer, ensure_ascii=False))
    else:
        sources = f" (sources: {', '.join(answer['sources'])})" if answer["sources"] else ""
        out(f"[{answer['route']}, confidence {answer['confidence']:.2f}{sources}]\n{answer['answer']}")
    return answer


def serve(args: AssistantServeArgs, log=print) -> None:
    from tunesmith.assistant.router import Assistant
    from tunesmith.assistant.routes import create_app
    from tunesmith.serve.keyed import keys_from_env, refuse_open_host, run_server

    folder, host, port = args.folder, args.host, args.port
    keys = keys_from_env()
    refuse_open_host(host, keys, "the assistant")
    app = create_app(Assistant(_existing(folder)), keys, host)
    log(f"assistant: POST questions to http://{host}:{port}/v1/ask" + (" (API keys on)" if keys else ""))
    run_server(app, host, port)


def _existing(folder: str) -> str:
    from pathlib import Path

    from tunesmith.errors import UserError

    if not (Path(folder) / "assistant.json").is_file():
        raise UserError(f"{folder}: not an assistant folder (no assistant.json); make one with "
                        "`tunesmith assistant build --kb FAQ.csv --out FOLDER`")
    return folder
