"""`tunesmith assistant build|ask|serve`: a customer-service assistant over trained runs and a
knowledge base (tunesmith.assistant)."""

from __future__ import annotations

import json
from dataclasses import asdict


def ask(folder: str, question: str, as_json: bool = False, out=print) -> dict:
    from tunesmith.assistant.router import Assistant

    answer = asdict(Assistant(_existing(folder)).answer(question))
    if as_json:
        out(json.dumps(answer, ensure_ascii=False))
    else:
        sources = f" (sources: {', '.join(answer['sources'])})" if answer["sources"] else ""
        out(f"[{answer['route']}, confidence {answer['confidence']:.2f}{sources}]\n{answer['answer']}")
    return answer


def serve(folder: str, host: str = "127.0.0.1", port: int = 8091, log=print) -> None:
    import uvicorn

    from tunesmith.assistant.router import Assistant
    from tunesmith.assistant.routes import create_app
    from tunesmith.serve.keyed import keys_from_env, refuse_open_host

    keys = keys_from_env()
    refuse_open_host(host, keys, "the assistant")
    app = create_app(Assistant(_existing(folder)), keys, host)
    log(f"assistant: POST questions to http://{host}:{port}/v1/ask" + (" (API keys on)" if keys else ""))
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _existing(folder: str) -> str:
    from pathlib import Path

    from tunesmith.errors import UserError

    if not (Path(folder) / "assistant.json").is_file():
        raise UserError(f"{folder}: not an assistant folder (no assistant.json); make one with "
                        "`tunesmith assistant build --kb FAQ.csv --out FOLDER`")
    return folder
