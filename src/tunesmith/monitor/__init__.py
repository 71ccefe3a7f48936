"""`tunesmith monitor`: market-sentiment monitoring on top of trained runs.

A stream of texts with timestamps (stream.py) is scored in batches by a sentiment run and
given topics (scoring.py), kept in SQLite with the read positions of its sources (store.py),
checked against alert rules per topic and time window (rules.py), and alerts go to the log, a
JSONL file and a signed webhook (sinks.py). Items, read positions and the alerts they trigger
are committed in one transaction, so a monitor stopped at any point continues where it was:
no line is counted twice, no alert is lost (an alert not yet delivered is sent on restart).
report.py draws each topic's negative share over time with its alerts marked.
"""
