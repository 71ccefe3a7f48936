"""report.html: one self-contained page per run (plots embedded as PNG, no external assets)."""

from __future__ import annotations

import base64
import functools
import html
from pathlib import Path
import io

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


# matplotlib's own font (DejaVu Sans) has no Chinese, Japanese or Korean. These fonts, where one
# is installed, draw the labels it cannot (matplotlib falls back glyph by glyph along the list).
CJK_FONTS = ["Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
             "Droid Sans Fallback", "Microsoft YaHei", "SimHei", "PingFang SC", "Hiragino Sans GB",
             "AR PL UMing CN", "Noto Sans CJK JP", "Noto Sans CJK KR"]


@functools.lru_cache(maxsize=1)
def _fonts() -> tuple[list[str], frozenset]:
    """The font families the plots use (DejaVu Sans, then the CJK fonts installed) and the
    characters they can draw between them."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    families, chars = [], set()
    for family in ["DejaVu Sans", *CJK_FONTS]:
        try:
            path = font_manager.findfont(family, fallback_to_default=False)
        except ValueError:  # not installed
            continue
        families.append(family)
        chars.update(FT2Font(path).get_charmap())
    return families, frozenset(chars)


def drawable(text: str) -> bool:
    """Whether the installed fonts draw every character of `text` (else a plot shows boxes)."""
    chars = _fonts()[1]
    return all(ord(ch) in chars or ch.isspace() for ch in text)


def tick_labels(labels: list[str]) -> list[str]:
    """Labels as a plot can show them: one the installed fonts cannot draw becomes its number,
    which the report's key (`label_key`) maps back to the label."""
    return [label if drawable(label) else str(i) for i, label in enumerate(labels)]


def label_key(labels: list[str]) -> str:
    """A line under a plot that names the labels drawn as numbers; empty when none is."""
    numbered = [f"{i} = {html.escape(label)}" for i, label in enumerate(labels) if not drawable(label)]
    if not numbered:
        return ""
    return ("<p>Labels this machine has no font to draw are numbered in the plot (install a CJK font, e.g. "
            f"Noto Sans CJK, to see them): {'; '.join(numbered)}.</p>")


def png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def loss_plot(history: list[dict]) -> str | None:
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if not train:
        return None
    steps, losses = zip(*train)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(steps, losses, alpha=0.3, label="train loss (step)")
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, label=f"train loss ({window}-step mean)")
    val = [(h["step"], h["val_loss"]) for h in history if "val_loss" in h]
    if val:
        ax.plot(*zip(*val), "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.legend()
    return png(fig)


def validation_plot(history: list[dict], metric: str) -> str | None:
    points = [(h["step"], h[f"val_{metric}"]) for h in history if f"val_{metric}" in h]
    if not points or metric == "loss":
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(*zip(*points), "o-")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {metric}")
    return png(fig)


def confusion_plot(matrix: list[list[int]], labels: list[str]) -> str:
    m = np.asarray(matrix)
    size = min(12, 2 + 0.5 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    ax.imshow(m, cmap="Blues")
    ticks = tick_labels(labels)
    families = _fonts()[0]
    ax.set_xticks(range(len(labels)), ticks, rotation=45, ha="right", fontfamily=families)
    ax.set_yticks(range(len(labels)), ticks, fontfamily=families)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center",
                        color="white" if m[i, j] > m.max() / 2 else "black", fontsize=8)
    return png(fig)


# Metrics shown in the headline table, where the task reports them.
HEADLINE = ("accuracy", "macro_f1", "weighted_f1", "precision", "recall", "f1", "micro_f1", "subset_accuracy",
            "mse", "mae", "pearson", "spearman", "loss", "perplexity", "exact_match", "rouge_l",
            "reward_accuracy", "reward_margin", "logp_accuracy", "reward", "answer_tokens")
BASELINE_NOTE = "the pretrained encoder frozen, with only a linear head fitted on its features"


def samples_table(test: dict, baseline: dict | None) -> str:
    """Generated answers of the base model and the tuned model to the same test prompts."""
    tuned = test.get("samples") or []
    if not tuned:
        return ""
    e = html.escape
    base = (baseline or {}).get("samples") or []
    rows = "".join(
        f"<tr><td>{e(s['prompt'])}</td><td>{e(s['reference'])}</td>"
        f"<td>{e(base[i]['answer']) if i < len(base) else 'n/a'}</td><td>{e(s['answer'])}</td></tr>"
        for i, s in enumerate(tuned))
    return ("<h2>Generated answers (test prompts)</h2><table><tr><th>prompt</th><th>reference</th>"
            f"<th>base model</th><th>tuned model</th></tr>{rows}</table>")


def preference_plot(history: list[dict]) -> str | None:
    """DPO: the policy's log-probabilities of chosen and rejected answers, relative to the reference."""
    points = [(h["step"], h["chosen_reward"], h["rejected_reward"]) for h in history if "chosen_reward" in h]
    if not points:
        return None
    steps, chosen, rejected = zip(*points)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    ax.plot(steps, chosen, label="chosen: beta * (log p - log p_ref)")
    ax.plot(steps, rejected, label="rejected: beta * (log p - log p_ref)")
    ax.axhline(0, color="#888", lw=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("implicit reward")
    ax.legend()
    logps = [(h["step"], h["chosen_logp"], h["rejected_logp"]) for h in history if "chosen_logp" in h and "loss" in h]
    if logps:
        s, c, r = zip(*logps)
        ax2.plot(s, c, label="chosen log p")
        ax2.plot(s, r, label="rejected log p")
        ax2.set_xlabel("optimizer step")
        ax2.set_ylabel("summed answer log-probability")
        ax2.legend()
    return png(fig)


def rl_plot(history: list[dict]) -> str | None:
    """GRPO: the sampled completions' mean reward, the KL to the starting model, and their length."""
    points = [(h["step"], h["reward"], h["kl"], h["completion_tokens"]) for h in history if "completion_tokens" in h]
    if not points:
        return None
    steps, reward, kl, tokens = zip(*points)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, values, name in zip(axes, (reward, kl, tokens), ("mean reward", "KL to the starting model",
                                                             "completion tokens")):
        ax.plot(steps, values)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(name)
    return png(fig)


def completions_table(history: list[dict], shown: int = 6) -> str:
    """GRPO: one sampled completion per step, at evenly spaced steps, with its reward."""
    samples = [h for h in history if isinstance(h.get("sample"), dict)]
    if not samples:
        return ""
    picked = [samples[round(i * (len(samples) - 1) / max(1, shown - 1))] for i in range(min(shown, len(samples)))]
    e = html.escape
    rows = "".join(f"<tr><td>{h['step']}</td><td>{e(str(h['sample'].get('completion', '')))}</td>"
                   f"<td>{e(str(h['sample'].get('answer', '')))}</td><td>{h['sample'].get('reward', 0):.3f}</td></tr>"
                   for h in dict((h["step"], h) for h in picked).values())
    return ("<h2>Sampled completions (training)</h2><table><tr><th>step</th><th>completion</th><th>reference</th>"
            f"<th>reward</th></tr>{rows}</table>")


def continual_table(facts: dict | None) -> str:
    """Continual learning: the old test split before and after, and the new one."""
    if not facts:
        return ""
    e, old = html.escape, facts["old_test"]
    return (f"<h2>Continual learning (from {e(facts['from'])})</h2>"
            f"<p>{facts['replayed']:,} old examples replayed; EWC lambda {facts['ewc_lambda']:g}; "
            f"new labels: {e(', '.join(facts['new_labels']) or 'none')}.</p>"
            "<table><tr><th>old test split</th><th>before</th><th>after</th><th>forgetting</th></tr>"
            + "".join(f"<tr><td>{e(name)}</td><td>{row['before']:.4f}</td><td>{row['after']:.4f}</td>"
                      f"<td>{row['forgetting']:+.4f}</td></tr>"
                      for name, row in [(old["metric"], old), ("accuracy", old.get("accuracy"))] if row)
            + "</table>")


def compression_table(facts: dict | None) -> str:
    """A compressed run: its lineage and the cost table against its source (compress/costs.py)."""
    if not facts:
        return ""
    e = html.escape
    lines = [line.strip().strip("|").split("|") for line in facts["table"].strip().splitlines()]
    header, rows = lines[0], lines[2:]  # lines[1] is Markdown's |---| rule
    steps = " → ".join(e(step["kind"]) for step in facts["lineage"])
    return (f"<h2>Compression: {steps} (source {e(facts['source'])})</h2>"
            "<p>Measured on the source's test split, both models in fresh processes one after the other.</p><table>"
            + "<tr>" + "".join(f"<th>{e(c.strip())}</th>" for c in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{e(c.strip())}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def render(title: str, config: dict, metrics: dict, history: list[dict], labels: list[str]) -> str:
    e = html.escape
    test = metrics["test"]
    baseline = metrics.get("baseline")
    rows = []
    for key in HEADLINE:
        if not isinstance(test.get(key), float):
            continue  # each task reports its own subset
        base = f"{baseline[key]:.4f}" if baseline and key in baseline else "n/a"
        gain = f"{test[key] - baseline[key]:+.4f}" if baseline and key in baseline else ""
        rows.append(f"<tr><td>{key}</td><td>{base}</td><td><b>{test[key]:.4f}</b></td><td>{gain}</td></tr>")
    per_class_rows = "".join(
        f"<tr><td>{e(label)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
        f"<td>{v['f1']:.3f}</td><td>{v['support']}</td></tr>"
        for label, v in test.get("per_class", {}).items()
    )
    per_class = ("<h2>Per class or entity type (test)</h2><table><tr><th>label</th><th>precision</th><th>recall</th>"
                 f"<th>F1</th><th>support</th></tr>{per_class_rows}</table>") if per_class_rows else ""
    training = metrics.get("training", {})
    params = metrics.get("parameters", {})
    facts = {
        "task": config.get("task"), "model": config.get("model"), "method": config.get("method"),
        "test examples": test.get("count"),
        "train time (s)": f"{training.get('train_seconds', 0):.1f}" if training else None,
        "train samples/s": f"{training.get('samples_per_second', 0):.1f}" if training else None,
        "trainable parameters": f"{params['trainable']:,} of {params['total']:,} ({params['trainable_pct']:.2f}%)" if params else None,
        "peak memory (MB)": f"{metrics.get('peak_memory_mb', 0):.0f}" if metrics.get("peak_memory_mb") else None,
        "best step": training.get("best_step"),
    }
    facts_html = "".join(f"<tr><td>{e(k)}</td><td>{e(str(v))}</td></tr>" for k, v in facts.items() if v is not None)
    images = [
        ("Loss", loss_plot(history)),
        (f"Validation {config.get('metric', '')}", validation_plot(history, config.get("metric", "macro_f1"))),
        ("Preference rewards (training)", preference_plot(history)),
        ("Rewards (training)", rl_plot(history)),
        ("Confusion matrix (test)", confusion_plot(test["confusion_matrix"], labels) if "confusion_matrix" in test else None),
    ]
    figures = "".join(f"<h2>{e(t)}</h2><img src='{src}' alt='{e(t)}'>" for t, src in images if src)
    if "confusion_matrix" in test:
        figures += label_key(labels)
    figures = (compression_table(metrics.get("compression")) + continual_table(metrics.get("continual"))
               + data_quality_section(metrics.get("data_quality")) + figures)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{e(title)}</h1>
<h2>Test set: untuned baseline vs fine-tuned</h2>
<p>Baseline: {e((baseline or {}).get("description", BASELINE_NOTE))}.</p>
<table><tr><th>metric</th><th>baseline</th><th>fine-tuned</th><th>gain</th></tr>{''.join(rows)}</table>
<h2>Run</h2><table>{facts_html}</table>
{samples_table(test, baseline)}
{figures}
{completions_table(history)}
{per_class}
</body></html>
"""


def data_quality_section(facts: dict | None) -> str:
    """The run report's HTML section on data quality (from metrics.json's data_quality)."""
    if not facts:
        return ""
    rows = []
    suspects = facts.get("suspect_labels")
    if suspects:
        rows.append(("training labels that look wrong", f"{suspects['count']} of {suspects['of']}"
                     + (f" (dropped: {facts.get('dropped_suspect_labels', 0)})" if facts.get("dropped_suspect_labels") else "")))
    fought = facts.get("training_suspect_labels")
    if fought:
        rows.append(("training labels the model preferred another class for, most of training (negative area "
                     "under the margin: quality/training_suspect_labels.csv)", f"{fought['count']} of {fought['of']}"))
    near = facts.get("near_duplicates")
    if near:
        removed = facts.get("removed_near_duplicates") or {}
        for name in ("val", "test"):
            if name in near:
                rows.append((f"{name} texts nearly repeating a training text (cosine >= {near['threshold']:g})",
                             f"{near[name]}" + (f" (left out: {removed[name]})" if removed.get(name) else "")))
    overlaps = facts.get("overlaps") or {}
    for name in ("val", "test"):
        if overlaps.get(name):
            rows.append((f"{name} texts repeating part of a training text word for word", str(overlaps[name])))
    for name, count in (facts.get("near_duplicate_images") or {}).items():
        rows.append((f"{name} images nearly repeating a training image", str(count)))
    for name, count in (facts.get("outliers") or {}).items():
        if name != "cutoff":
            rows.append((f"{name} texts far from every class", str(count)))
    if facts.get("empty_after_normalisation"):
        rows.append(("texts empty after normalisation", str(facts["empty_after_normalisation"])))
    if facts.get("other_script"):
        rows.append((f"texts not in the main script ({facts.get('main_script')})", str(facts["other_script"])))
    files = ", ".join(Path(p).name for p in (facts.get("files") or {}).values())
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return ("<h2>Data quality (before training)</h2><table><tr><th>finding</th><th>rows</th></tr>" + body + "</table>"
            + (f"<p>Full lists in the run folder's quality/: {html.escape(files)}.</p>" if files else ""))
