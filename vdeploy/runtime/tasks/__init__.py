"""One module per task. A task registers itself here; verification, and the apps that need what a
task means, look it up by the bundle's task name."""
from __future__ import annotations

import importlib

from ...registry import Registry
from .base import Agreement, Gate, Task, Tensor, parse_gate_options

TASKS: Registry[Task] = Registry("task")


def register_task(task: Task) -> Task:
    TASKS.register(task.name, task)
    return task


def get_task(name: str) -> Task:
    return TASKS.get(name)


for _module in ("detection", "keypoints", "panoptic_segmentation", "semantic_segmentation", "embedding",
                "classification", "depth_estimation"):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["TASKS", "Agreement", "Gate", "Task", "Tensor", "get_task", "parse_gate_options", "register_task"]
