"""monitor.html: each topic's negative share and volume per window, alerts marked, and the
alerts with why they fired and the texts that drove them (a self-contained page)."""

from __future__ import annotations

import html
from datetime import datetime, timezone

from tunesmith.evaluate.report import plt, png
from tunesmith.monitor.sinks import when

TOPICS_SHOWN = 8  # the busiest topics get a plot each


def topic_plot(series, alerts: list[dict], topic: str, window_s: float) -> str:
    times = [datetime.fromtimestamp(start, timezone.utc) for start, _ in series]
    fig, ax = plt.subplots(figsize=(7, 2.8))
    volume = ax.twinx()
    volume.bar(times, [s.count for _, s in series], width=0.8 * window_s / 86400, color="#ccc", label="texts per window")
    volume.set_ylabel("texts")
    ax.set_zorder(volume.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.plot(times, [s.share for _, s in series], "-o", markersize=3, color="#c0392b", label="share negative")
    for alert in alerts:
        ax.axvline(datetime.fromtimestamp(alert["window_start"], timezone.utc), color="black", linestyle="--",
                   linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share negative")
    ax.set_title(f"{topic}: dashed lines are alerts" if alerts else topic)
    fig.autofmt_xdate()
    return png(fig)


def render(store, window_s: float) -> str:
    e = html.escape
    alerts = store.alerts()
    topics = store.topics()
    figures = []
    for topic, count in topics[:TOPICS_SHOWN]:
        series = store.series(topic, window_s)
        mine = [a for a in alerts if a["topic"] == topic]
        figures.append(f"<h3>{e(topic)} ({count:,} texts)</h3><img src='{topic_plot(series, mine, topic, window_s)}' "
                       f"alt='negative share and volume of {e(topic)}'>")
    rows = []
    for a in alerts:
        texts = "".join(f"<li>{e(x['text'])} <small>({x['score']:+.2f})</small></li>" for x in a["evidence"])
        rows.append(f"<tr><td>{a['id']}</td><td>{e(a['rule'])}</td><td>{e(a['topic'])}</td>"
                    f"<td>{when(a['window_start'])}</td><td>{e(a['why'])}</td><td><ul>{texts}</ul></td></tr>")
    table = ("<table><tr><th>#</th><th>rule</th><th>topic</th><th>window</th><th>why</th><th>most negative texts"
             f"</th></tr>{''.join(rows)}</table>") if rows else "<p>No alerts.</p>"
    counts = ", ".join(f"{e(t)} {c:,}" for t, c in topics)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tunesmith monitor</title>
<style>body{{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem}}
table{{border-collapse:collapse;margin:1rem 0}}td,th{{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}}
img{{max-width:100%}}</style></head><body>
<h1>Sentiment monitor</h1>
<p>Window {window_s / 3600:g} h. Texts per topic: {counts or 'none yet'}.</p>
<h2>Alerts</h2>{table}
<h2>Topics</h2>{''.join(figures)}
</body></html>
"""
