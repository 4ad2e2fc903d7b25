"""Accuracy of every backend on a real dataset, side by side (`vdeploy eval`).

    from vdeploy.eval import open_dataset, evaluate, build_report
    ds = open_dataset("coco/annotations.json")
    results = evaluate(ds, ["onnxruntime", "openvino"], lambda b: Predictor(bundle, b), ...)

Torch-free: the "torch" backend is reached through the Predictor it is handed."""
from .datasets import DatasetOptions, Sample, Scores, check_task, detect_format, open_dataset
from .report import build_report, print_table, write_report
from .runner import BackendResult, evaluate

__all__ = ["DatasetOptions", "Sample", "Scores", "check_task", "detect_format", "open_dataset", "evaluate",
           "BackendResult", "build_report", "print_table", "write_report"]
