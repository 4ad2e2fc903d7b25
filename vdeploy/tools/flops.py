"""Parameters and FLOPs of a model, per module and in total.

What counts
-----------
FLOPs are those of `torch.utils.flop_counter.FlopCounterMode`, PyTorch's own shape-based
counter: convolutions (plain, grouped, transposed), matrix products (`mm`, `addmm`, `bmm`,
`baddbmm`, hence `nn.Linear` and `matmul`) and scaled-dot-product attention. A multiply-add
is 2 FLOPs, and every counted operator is a multiply-add kernel, so MACs = FLOPs / 2. Bias
additions are not counted. This is the convention of the published figures (ResNet-50 at
224x224: 4.1 GMACs, conv + linear only).

Everything else that does arithmetic (batch norm, activations, residual additions, pooling,
interpolation, NMS, RoIAlign, ...) is *not* in the totals. Rather than letting those count as a
silent zero, every such operator that ran is named in `uncounted` with its number of calls.
Operators that do no arithmetic at all are left out of that list; see `FREE_OPS`.

Counting needs one real forward pass on random inputs shaped like the model's inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ..errors import UserError

# Operators that move, view, allocate or describe data without arithmetic. They are neither
# counted nor reported as uncounted: views and reshapes, copies and dtype/device casts,
# concatenation and indexing (pure data movement), tensor creation, and metadata queries.
FREE_OPS = frozenset(f"aten.{name}" for name in (
    # views and reshapes
    "view", "_unsafe_view", "reshape", "_reshape_alias", "expand", "expand_as", "permute",
    "transpose", "t", "squeeze", "unsqueeze", "flatten", "unflatten", "slice", "select",
    "narrow", "split", "split_with_sizes", "unsafe_split", "chunk", "unbind", "as_strided",
    "alias", "detach", "view_as", "unfold", "diagonal", "movedim", "lift_fresh",
    "lift_fresh_copy", "_unsafe_index",
    # copies and casts
    "clone", "copy_", "copy", "_to_copy", "to", "contiguous", "_copy_from",
    "_copy_from_and_resize",
    # data movement
    "cat", "stack", "index", "index_select", "gather", "repeat", "roll", "flip",
    "constant_pad_nd", "masked_select",
    # creation
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros",
    "zeros_like", "new_zeros", "ones", "ones_like", "new_ones", "full", "full_like", "new_full",
    "fill_", "zero_", "arange", "scalar_tensor", "resize_", "set_",
    # metadata
    "_local_scalar_dense", "size", "sym_size", "stride", "sym_stride", "storage_offset",
    "sym_storage_offset", "numel", "sym_numel", "dim", "is_contiguous", "sym_is_contiguous",
    "is_same_size", "is_strides_like_format", "is_non_overlapping_and_dense",
)) | {"prim.layout", "prim.device"}

_COUNTED_OPS = frozenset(str(op) for op in flop_registry)

DEFAULT_INPUT_SIZE = {"detection": (800, 1333), "instance_segmentation": (800, 1333),
                      "semantic_segmentation": (512, 512), "embedding": (256, 128),
                      "classification": (224, 224), "depth_estimation": (480, 640)}


@dataclass
class ModuleCost:
    name: str        # dotted path inside the model; "" is the model itself
    type: str
    depth: int       # 0 for the model, 1 for its children, ...
    params: int      # parameters of the module and its children (shared ones once)
    flops: int       # counted FLOPs spent inside the module, children included

    @property
    def macs(self) -> int:
        return self.flops // 2


@dataclass
class FlopReport:
    params: int
    flops: int
    modules: list[ModuleCost]
    counted_ops: dict[str, int]       # operator -> FLOPs
    uncounted: dict[str, int]         # operator -> calls, for operators with no formula
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return self.flops // 2

    def to_json(self) -> dict[str, Any]:
        return {
            "params": self.params, "macs": self.macs, "flops": self.flops,
            "uncounted": sorted(self.uncounted),
            "uncounted_calls": dict(sorted(self.uncounted.items())),
            "counted_ops": dict(sorted(self.counted_ops.items())),
            "input_shapes": self.input_shapes,
            "counts": "conv, matmul/linear and attention; MACs = FLOPs / 2",
            "modules": [{"name": m.name, "type": m.type, "depth": m.depth, "params": m.params,
                         "flops": m.flops, "macs": m.macs} for m in self.modules],
        }


class _OpRecorder(TorchDispatchMode):
    """Records every operator that actually executes (after FlopCounterMode's decompositions)."""

    def __init__(self):
        super().__init__()
        self.calls: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func._overloadpacket) if hasattr(func, "_overloadpacket") else str(func)
        self.calls[name] = self.calls.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def _param_counts(module: torch.nn.Module) -> dict[str, int]:
    counts = {}
    for name, mod in module.named_modules(remove_duplicate=False):
        if name not in counts:
            counts[name] = sum(p.numel() for p in mod.parameters())
    return counts


def count_flops(module: torch.nn.Module, inputs: Sequence[torch.Tensor]) -> FlopReport:
    """Run `module(*inputs)` once under the counters and attribute FLOPs to its modules."""
    recorder = _OpRecorder()
    counter = FlopCounterMode(display=False)
    # The recorder is entered first so it sits below the counter: it sees the operators the
    # counter lets through, i.e. the ones really executed, under the same names.
    with torch.no_grad(), recorder, counter:
        module(*inputs)

    per_tracker_name = {k: sum(v.values()) for k, v in counter.get_flop_counts().items()}
    root = type(module).__name__
    params = _param_counts(module)
    flops = _rolled_up(module, {name: per_tracker_name.get(f"{root}.{name}" if name else root, 0)
                                for name, _ in module.named_modules()})
    modules = [ModuleCost(name=name, type=type(mod).__name__, depth=name.count(".") + 1 if name else 0,
                          params=params[name], flops=flops[name])
               for name, mod in module.named_modules()]
    global_counts = counter.get_flop_counts().get("Global", {})
    counted = {str(op): int(n) for op, n in global_counts.items()}
    uncounted = {op: n for op, n in recorder.calls.items()
                 if op not in _COUNTED_OPS and op not in FREE_OPS}
    return FlopReport(params=params[""], flops=int(counter.get_total_flops()), modules=modules,
                      counted_ops=counted, uncounted=uncounted)


def _rolled_up(module: torch.nn.Module, tracked: dict[str, int]) -> dict[str, int]:
    """FLOPs per module with containers filled in. The counter attributes FLOPs to the modules whose
    forward ran; a container that is never called itself (a ModuleList or ModuleDict whose members
    the parent calls in a loop, e.g. ASPP's branches) would show 0 while its members have FLOPs, so
    such a module gets the sum of its children."""
    out: dict[str, int] = {}

    def visit(name: str, mod: torch.nn.Module) -> int:
        children = [visit(f"{name}.{c}" if name else c, child) for c, child in mod.named_children()]
        out[name] = tracked.get(name, 0) or sum(children)
        return out[name]

    visit("", module)
    return out


def default_input_size(spec: dict) -> tuple[int, int]:
    """The size a typical image reaches the graph at, from the model's preprocessing."""
    if spec.get("input_size"):
        return tuple(spec["input_size"])
    resize = (spec.get("preprocess") or {}).get("resize") or {}
    kind = resize.get("type")
    if kind == "fixed":
        return int(resize["height"]), int(resize["width"])
    if kind == "shorter_center_crop":
        crop = resize["crop"]
        return (crop, crop) if isinstance(crop, int) else tuple(crop)
    if kind == "shortest_edge":
        return int(resize["min_size"]), int(resize["max_size"])
    return DEFAULT_INPUT_SIZE.get(spec.get("task"), (224, 224))


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "int64": torch.int64,
           "int32": torch.int32, "uint8": torch.uint8}


def example_inputs(spec: dict, input_size: tuple[int, int] | None = None, seed: int = 0):
    """Random tensors shaped per `spec["inputs"]` -> (tensors, {name: shape}).

    Image inputs get values in 0..255 at `input_size` (padded to `pad.size_divisibility`);
    `im_info` gets the valid (height, width) of that image, as the runtime would send.
    """
    height, width = input_size or default_input_size(spec)
    divisor = int(((spec.get("preprocess") or {}).get("pad") or {}).get("size_divisibility") or 1)
    padded = (math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor)
    gen = torch.Generator().manual_seed(seed)
    tensors, shapes = [], {}
    for inp in spec["inputs"]:
        name, shape = inp["name"], list(inp["shape"])
        dtype = _DTYPES.get(inp.get("dtype", "float32"))
        if dtype is None:
            raise UserError(f"input {name!r}: unsupported dtype {inp.get('dtype')!r}")
        if name == "im_info":
            dims = [1 if isinstance(d, str) else int(d) for d in shape]
            tensors.append(torch.tensor([float(height), float(width)]).expand(*dims).to(dtype).clone())
            shapes[name] = dims
            continue
        dims = _resolve_image_dims(name, shape, inp.get("layout", "NCHW"), padded, input_size)
        if dtype.is_floating_point:
            t = torch.rand(dims, generator=gen) * 255.0
        else:
            t = torch.randint(0, 256, dims, generator=gen)
        tensors.append(t.to(dtype))
        shapes[name] = dims
    return tensors, shapes


def _resolve_image_dims(name, shape, layout, padded, requested):
    layout = layout if len(layout) == len(shape) else "NCHW"[-len(shape):]
    dims = []
    for axis, d in zip(layout, shape):
        if isinstance(d, int):
            if requested is not None and axis in "HW" and d != padded["HW".index(axis)]:
                raise UserError(f"input {name!r} has a fixed {'height' if axis == 'H' else 'width'} "
                                f"of {d}; --input-size cannot change it")
            dims.append(d)
        elif axis in "HW":
            dims.append(padded["HW".index(axis)])
        else:
            dims.append(1)   # batch and other dynamic axes: one
    return dims


def human(n: float) -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return str(int(n))
