"""What a task is to verification: the figures its users measure and the gates on them.

A gate compares one agreement figure of a backend against the PyTorch reference on the same
inputs (COCO AP with PyTorch's detections as ground truth, label-map agreement, relative error of
embeddings, top-1 agreement). Element-wise statistics are diagnostics, never gates: an element
near zero or a probability on the slope of a sigmoid says little about whether the model is right.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from ...errors import UserError
from ..prediction import Prediction


@dataclass(frozen=True)
class Gate:
    metric: str
    threshold: float
    higher_is_better: bool
    meaning: str = ""

    def passes(self, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        return value >= self.threshold if self.higher_is_better else value <= self.threshold

    def describe(self) -> str:
        return f"{self.metric} {'>=' if self.higher_is_better else '<='} {self.threshold:g}"

    def with_threshold(self, value: float) -> "Gate":
        return Gate(self.metric, value, self.higher_is_better, self.meaning)


@dataclass
class Tensor:
    """One served output tensor (docs/serving.md)."""
    name: str
    datatype: str        # Open Inference Protocol datatype: FP32, INT32, BYTES
    data: object         # a numeric numpy array, or an object array of bytes for BYTES


@dataclass
class Agreement:
    """One backend's agreement with the reference: the gated figures over all inputs, figures per
    input (diagnostics), and notes a user needs to read them."""
    metrics: dict[str, float]
    per_input: list[dict[str, float]]
    notes: list[str]


class Task:
    """What one task means to every stage that consumes a bundle. Subclasses set `name`, `gates`
    and `bench_hw`, and fill the hooks: agreement (verification), record (eval / from-bin
    records), draw (pictures); `compare_raw` (diagnostics) has an element-wise default."""

    name: str = ""
    gates: tuple[Gate, ...] = ()
    # Thresholds a reduced-precision backend is held to instead (metric -> threshold): agreement
    # with float32 PyTorch that bf16 / int8 arithmetic can reach on a correct model.
    reduced_precision: dict[str, dict[str, float]] = {}
    bench_hw: tuple[int, int] = (512, 512)  # image size to benchmark at when the bundle has none

    def agreement(self, refs: Sequence[Prediction], gots: Sequence[Prediction], spec: dict) -> Agreement:
        raise NotImplementedError

    # What `predict` writes: JSON results gathered into one file (COCO results, top-k classes), or
    # one file per image under the output folder (label maps, embeddings).
    writes_json: bool = True
    output_noun: str = "results"

    def json_results(self, pred: Prediction, name: str, classes: list[str]) -> list[dict]:
        raise NotImplementedError

    def write_output(self, out_dir, name: str, pred: Prediction) -> None:
        raise NotImplementedError

    def record(self, pred: Prediction, key: str, classes: list[str], side_dir) -> dict:
        """One image's prediction record (see vdeploy.eval.records for the formats)."""
        raise NotImplementedError

    def draw(self, image_bgr, pred: Prediction, classes: list[str], score_threshold: float):
        raise NotImplementedError

    # The serving contract (docs/serving.md): the model metadata's outputs, the output tensors of
    # one request of B images, and the TorchServe-style JSON answer for one image.
    def serve_outputs(self) -> list[dict]:
        raise UserError(f"{self.name} bundles cannot be served yet: the serving contract has no {self.name} outputs")

    def serve_tensors(self, preds: Sequence[Prediction]) -> list[Tensor]:
        raise UserError(f"{self.name} bundles cannot be served yet: the serving contract has no {self.name} outputs")

    def serve_json(self, pred: Prediction, classes: list[str]) -> dict:
        raise UserError(f"{self.name} bundles have no JSON answer on /predictions; use the v2 protocol")

    def compare_raw(self, ref: dict, got: dict, tolerances: dict) -> list:
        """Element-wise statistics of the raw graph outputs: diagnostics, never a verdict."""
        from ..compare import Tolerance, compare_dense

        return [compare_dense(n, ref[n], got[n], tolerances.get(n, Tolerance())) for n in ref]

    def resolve_gates(self, overrides: dict[str, float] | None = None, precision: str = "fp32") -> list[Gate]:
        """The gates of a backend at `precision`, with `overrides` (metric -> threshold) applied;
        an unknown metric is a user error. Overrides apply to every precision."""
        overrides = {**self.reduced_precision.get(precision, {}), **(overrides or {})}
        known = {g.metric for g in self.gates}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"--gate {unknown[0]}: not a gate of the {self.name} task; its gates: "
                            + ", ".join(g.describe() for g in self.gates))
        return [g.with_threshold(overrides[g.metric]) if g.metric in overrides else g for g in self.gates]


def concat_rows(parts, empty_shape: tuple, dtype) -> np.ndarray:
    """Per-image arrays stacked along their first axis (the images' rows one after another)."""
    parts = [np.asarray(p, dtype).reshape((-1,) + tuple(empty_shape[1:])) for p in parts if p is not None]
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(empty_shape, dtype)


def parse_gate_options(items: Iterable[str]) -> dict[str, float]:
    """`--gate METRIC=VALUE` options -> {metric: threshold}. The one parser for the option."""
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        try:
            threshold = float(value)
        except ValueError:
            threshold = float("nan")
        if not sep or not name.strip() or not math.isfinite(threshold):
            raise UserError(f"--gate must look like METRIC=VALUE (e.g. bbox_ap=0.99), got {item!r}")
        out[name.strip()] = threshold
    return out
