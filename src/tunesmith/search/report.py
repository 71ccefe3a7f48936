"""The study's report.html: what was tried, what won, and why (self-contained, like a run's)."""

from __future__ import annotations

import html
from pathlib import Path

from tunesmith.evaluate.report import png, loss_plot, validation_plot


def history_plot(rows: list[dict], metric: str, higher_better: bool) -> str | None:
    """Each finished trial's validation metric, and the best so far."""
    import matplotlib.pyplot as plt

    done = [(r["trial"], r["value"]) for r in rows if r["state"] == "complete" and r["value"] is not None]
    if not done:
        return None
    numbers, values = zip(*done)
    best, running = [], None
    for v in values:
        running = v if running is None else (max(running, v) if higher_better else min(running, v))
        best.append(running)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(numbers, values, "o", label="trial")
    ax.step(numbers, best, where="post", label="best so far")
    pruned = [r["trial"] for r in rows if r["state"] == "pruned"]
    if pruned:
        ax.plot(pruned, [min(values)] * len(pruned), "x", color="grey", label="pruned")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.legend()
    return png(fig)


def importances(study) -> dict[str, float]:
    """Each parameter's share of the variation in the metric ; empty while too few
    trials have finished to say (two at least, with a parameter that varied)."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "importances will be equal" when the trials tie
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every trial drew the same values
        return {}


def render(study_name: str, rows: list[dict], metric: str, higher_better: bool, weights: dict[str, float],
           best: dict | None) -> str:
    """`best`: {"trial", "value", "params", "test" (metrics), "history", "run"} of the winner, or None."""
    e = html.escape
    columns = [c for c in (rows[0] if rows else {}) if c != "error"]
    body = "".join("<tr>" + "".join(f"<td>{e(_cell(r[c]))}</td>" for c in columns) + "</tr>" for r in rows)
    table = f"<table><tr>{''.join(f'<th>{e(c)}</th>' for c in columns)}</tr>{body}</table>"
    weight_rows = "".join(f"<tr><td>{e(k)}</td><td>{v:.3f}</td></tr>" for k, v in weights.items())
    weight_html = (f"<h2>Parameter importance </h2><table><tr><th>parameter</th><th>importance</th></tr>"
                   f"{weight_rows}</table>") if weights else "<p>Parameter importance needs two finished trials.</p>"
    parts = [f"<h1>tunesmith tune: {e(study_name)}</h1>"]
    if best:
        test = best.get("test") or {}
        scores = ", ".join(f"{k} {v:.4f}" for k, v in test.items() if isinstance(v, float))
        parts.append(f"<h2>Best trial: {best['trial']}</h2><p>validation {e(metric)} <b>{best['value']:.4f}</b>; "
                     f"test (scored once, for this trial only): {e(scores or 'not scored')}</p>"
                     f"<p>run folder: {e(str(best['run']))}; parameters: "
                     f"{e(', '.join(f'{k}={_cell(v)}' for k, v in best['params'].items()))}</p>")
    images = [("Optimisation history", history_plot(rows, metric, higher_better))]
    if best:
        images += [("Best trial: loss", loss_plot(best["history"])),
                   (f"Best trial: validation {metric}", validation_plot(best["history"], metric))]
    parts += [f"<h2>{e(t)}</h2><img src='{src}' alt='{e(t)}'>" for t, src in images if src]
    parts += [weight_html, "<h2>Trials</h2>", table]
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tunesmith tune {e(study_name)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
img{{max-width:100%}}</style></head><body>
{''.join(parts)}
</body></html>
"""


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str) and "/" in value:
        return Path(value).name  # run folders: the name is enough beside the study folder
    return str(value)
