"""`tunesmith ui [RUNS]`: the local web dashboard over a runs folder (tunesmith.ui)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from pydantic import BaseModel, Field

from tunesmith.commands.flags import positional
from tunesmith.errors import UserError


class UiArgs(BaseModel):
    """`tunesmith ui [RUNS]`."""

    runs: str = Field("runs", description="folder that holds the run folders", json_schema_extra=positional())
    host: str = Field("127.0.0.1", description="address to listen on (another needs TUNESMITH_API_KEYS)")
    port: int = Field(8095, ge=1, le=65535, description="port")
    data_dirs: Optional[list[str]] = Field(
        None, description="a folder whose data files the start-a-run form may use, besides the runs folder "
        "(repeatable)", json_schema_extra={"flags": ["--data-dir"], "repeat": True, "metavar": "FOLDER"})


def ui(args: UiArgs, log=print) -> None:
    from tunesmith.serve.keyed import keys_from_env, refuse_open_host, run_server
    from tunesmith.ui.service import create_app

    runs, host, port = args.runs, args.host, args.port
    root = Path(runs)
    if not root.is_dir():
        raise UserError(f"{runs}: no such folder; train a run first (`tunesmith train --data FILE` writes runs/), "
                        "or name the folder that holds your runs")
    folders = [Path(d) for d in args.data_dirs or []]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"--data-dir {folder}: no such folder")
    keys = keys_from_env()
    refuse_open_host(host, keys, "the dashboard")
    app = create_app(root, keys, host, folders)
    log(f"dashboard: http://{host}:{port}/ over {root.resolve()}" + (" (API keys on)" if keys else ""))
    run_server(app, host, port)
