"""`tunesmith ui`: a local web dashboard over a runs folder.

    catalog.py   the runs under the folder: one summary row each, and a run's details
    insights.py  what a run's page computes on demand: the most confident wrong predictions,
                 the try-it answer (predictors loaded once and kept)
    jobs.py      training runs started (and cancelled, resumed) from the page, as subprocesses
    routes.py    the HTTP API and the pages (routes, their dependencies and handlers)
    service.py   the FastAPI app with `serve`'s security defaults
    static/      plain HTML, CSS and one small script: no build step, nothing fetched from a network
"""
