"""Data: read sources, detect columns, validate labels, split, check, batch."""
