"""tunesmith: task-first fine-tuning, from labeled data to an evaluated model."""

__version__ = "0.1.0"
