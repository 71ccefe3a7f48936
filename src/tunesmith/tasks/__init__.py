"""Tasks, registered by name. A task knows its data, its model head, its metrics and how
to decode predictions; the training loop knows none of that.

Adding a task = one module that calls `register_task` (and an import below). The loop and
the commands look tasks up here and never branch on a task's name.
"""

from __future__ import annotations

from typing import Protocol

TASKS: dict[str, "Task"] = {}


class Task(Protocol):
    name: str

    def load_data(self, cfg): ...  # -> Splits
    def build_model(self, source: str, labels: list[str]): ...  # -> torch.nn.Module
    def load_model(self, folder: str): ...  # a saved run's model, safetensors only
    def metrics(self, y_true: list[int], probs, labels: list[str]) -> dict: ...


def register_task(task: "Task") -> "Task":
    TASKS[task.name] = task
    return task


from tunesmith.tasks import text_classification  # noqa: E402,F401  (registers itself)
