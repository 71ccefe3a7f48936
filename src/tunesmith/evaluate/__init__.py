"""Metrics, the untuned baseline, and the run report."""
