"""`tunesmith ui [RUNS]`: the local web dashboard over a runs folder (tunesmith.ui)."""

from __future__ import annotations

from pathlib import Path

from tunesmith.errors import UserError


def ui(runs: str = "runs", host: str = "127.0.0.1", port: int = 8095, data_dirs: list[str] | None = None,
       log=print) -> None:
    import uvicorn

    from tunesmith.serve.keyed import keys_from_env, refuse_open_host
    from tunesmith.ui.service import create_app

    root = Path(runs)
    if not root.is_dir():
        raise UserError(f"{runs}: no such folder; train a run first (`tunesmith train --data FILE` writes runs/), "
                        "or name the folder that holds your runs")
    folders = [Path(d) for d in data_dirs or []]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"--data-dir {folder}: no such folder")
    keys = keys_from_env()
    refuse_open_host(host, keys, "the dashboard")
    app = create_app(root, keys, host, folders)
    log(f"dashboard: http://{host}:{port}/ over {root.resolve()}" + (" (API keys on)" if keys else ""))
    uvicorn.run(app, host=host, port=port, log_level="warning")
