"""Argument helpers shared by the commands (not a command itself)."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError

# The image types are decided once, by the reader: a folder lists exactly what read_image reads.
from ..runtime.io import IMAGE_SUFFIXES  # noqa: F401  (re-exported)


def parse_size(text: str | None, option: str = "--input-size"):
    """'800x1333' -> (800, 1333), '224' -> (224, 224), None/'' -> None: the one parser of sizes."""
    if not text:
        return None
    parts = text.lower().replace("*", "x").split("x")
    try:
        size = tuple(int(v) for v in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2:
        raise UserError(f"{option} must look like 800x1333 (height x width) or 224, got {text!r}")
    if min(size) <= 0:
        raise UserError(f"{option} must be positive, got {text!r}")
    return size


def add_config_override_arguments(p) -> None:
    """--opts (detectron2 style) and --cfg-options (MMSegmentation style): one parser for both."""
    p.add_argument("--opts", nargs="+", default=[], metavar="KEY VALUE",
                   help="detectron2-style config overrides, as pairs: --opts MODEL.ROI_HEADS.SCORE_THRESH_TEST 0.5 "
                        "INPUT.MIN_SIZE_TEST 640 (the key must exist)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="MMSegmentation-style config overrides: --cfg-options model.decode_head.num_classes=19 "
                        "model.test_cfg.mode=whole")


def parse_config_overrides(args) -> list[tuple[str, str]]:
    """(dotted key, value text) pairs from --opts and --cfg-options; values are read by the framework."""
    opts, pairs = list(getattr(args, "opts", []) or []), []
    if len(opts) % 2:
        raise UserError(f"--opts takes KEY VALUE pairs; {opts[-1]!r} has no value")
    pairs += list(zip(opts[0::2], opts[1::2]))
    for item in getattr(args, "cfg_options", []) or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--cfg-options takes KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    for key, _ in pairs:
        if not all(part.isidentifier() or part.isdigit() for part in key.split(".")):
            raise UserError(f"config override key {key!r} is not a dotted name")
    return pairs


def parse_list(text: str | None) -> list[str]:
    return [t.strip() for t in (text or "").split(",") if t.strip()]


def read_class_names(text: str, expected: int) -> list[str]:
    """--classes: a comma-separated list, or a file (a JSON list, or one name per line), with exactly
    `expected` distinct non-empty names (the model's class count)."""
    path = Path(text)
    if path.is_file():
        if path.stat().st_size > 10_000_000:
            raise UserError(f"--classes {text}: file larger than 10 MB")
        body = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix.lower() == ".json":
            import json

            try:
                names = json.loads(body)
            except ValueError as e:
                raise UserError(f"--classes {text}: not valid JSON ({e.msg}, line {e.lineno})") from None
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise UserError(f"--classes {text}: the JSON must be a list of strings")
        else:
            names = body.splitlines()
        names = [n.strip() for n in names if n.strip()]
    else:
        names = parse_list(text)
    if len(names) != expected:
        raise UserError(f"--classes gives {len(names)} names; the model has {expected} classes")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(f"--classes names {duplicated[0]!r} more than once")
    return names


def expand_images(items) -> list[Path]:
    """Image arguments -> image paths: a file as given (whatever its suffix: read_image decides from
    its header), a folder as its images (IMAGE_SUFFIXES, the formats read_image reads), sorted, each
    as a path under that folder."""
    out = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        else:
            out.append(p)
    if not out:
        raise UserError("no images given")
    return out


from ..api import is_bundle, open_predictor  # noqa: E402,F401  (the commands' shared entry points)
