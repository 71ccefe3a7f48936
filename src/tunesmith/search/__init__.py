"""Hyperparameter search (`tunesmith tune`) and the model ladder (`tunesmith auto`).

    space.py   the `search:` block of a config: ranges and choices, validated; each
               method's default space
    study.py   an Optuna study over training runs: pruning on validation, SQLite by default
               (resumable, shared by several workers), the trial table and best.yaml
    report.py  the study's report.html: optimisation history, importances, best run's curves
    ladder.py  `auto`: rungs from cheapest to dearest, within a time budget, up to a target

Nothing here imports the `train` command: the commands hand their training function in, so
the library stays below the commands.
"""
