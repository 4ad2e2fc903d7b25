"""Which files a framework config may pull in, and how much of them is read.

A config names other files (`_BASE_` in detectron2-style YAML, `_base_` in MMSegmentation). Those
names come from whoever wrote the config, so following them is confined:
- only regular files are read (never a device, a FIFO or a directory), never anything under the
  kernel's pseudo file systems (/proc, /sys, /dev), each at most MAX_FILE_BYTES, all the files of
  one config together at most MAX_TOTAL_BYTES and MAX_FILES;
- a base must lie in the config's own tree or under an allowed root. The tree is the parent of the
  top config's folder, because the frameworks' zoos reach sideways (detectron2's
  `COCO-Detection/x.yaml` names `../Base-RCNN-FPN.yaml`, mmseg's `fcn/x.py` names
  `../_base_/models/fcn_r50-d8.py`); when that parent is `/` or a system folder (/etc, /usr, ...)
  the tree is the config's folder alone. More roots come from `VDEPLOY_CONFIG_ROOTS` (os.pathsep
  separated) or the caller. Paths are compared after resolving symlinks;
- a base must have its framework's suffix (.yaml/.yml, .py).
Refusals are one-line ConfigErrors that name the config and the base as written, never the
content of the file that was refused.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..errors import ConfigError

ROOTS_ENV = "VDEPLOY_CONFIG_ROOTS"
MAX_FILE_BYTES = 1 << 20
MAX_TOTAL_BYTES = 8 << 20
MAX_FILES = 64
# Pseudo file systems: their "regular" files (/proc/self/environ) report size 0 and hold secrets.
_PSEUDO = ("/proc", "/sys", "/dev")
# A tree root at or above one of these would let a config reach system files through `../`.
_SYSTEM = frozenset({"/", "/etc", "/usr", "/var", "/opt", "/srv", "/boot", "/run", "/bin", "/sbin", "/lib",
                     "/lib64", "/home", "/root", "/mnt", "/media", "/tmp", "/snap", *_PSEUDO})


def short(value, limit: int = 60) -> str:
    """repr() of a config value cut to `limit` characters: messages quote configs, never whole files."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _is_pseudo(path: Path) -> bool:
    return any(_within(path, Path(p)) for p in _PSEUDO)


def env_roots() -> list[Path]:
    raw = os.environ.get(ROOTS_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def tree_root(top: Path) -> Path:
    """The folder whose files a config at `top` (resolved) may name as bases."""
    folder = top.parent
    parent = folder.parent
    if str(parent) in _SYSTEM or str(folder) in _SYSTEM:
        return folder
    return parent


class ConfigScope:
    """The files one config load may read: roots, and the bytes and files spent so far."""

    def __init__(self, top: str | os.PathLike, roots: Sequence[str | os.PathLike] = (),
                 suffixes: Iterable[str] = (".yaml", ".yml")):
        self.top = Path(top).expanduser()
        resolved = self.top.resolve()
        self.suffixes = tuple(suffixes)
        self.roots = [tree_root(resolved), *env_roots(), *(Path(r).expanduser().resolve() for r in roots)]
        self.bytes = 0
        self.files = 0

    def base(self, name: str, named_by: Path, key: str = "_BASE_") -> Path:
        """The path of base `name` written in `named_by`, checked against the scope."""
        written = short(name)
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = named_by.parent / path
        if path.suffix.lower() not in self.suffixes:
            raise ConfigError(f"{named_by}: {key} {written} is not a config file (expected "
                              f"{' or '.join(self.suffixes)}); refused")
        resolved = path.resolve()
        if _is_pseudo(resolved) or not any(_within(resolved, root) for root in self.roots):
            roots = ", ".join(str(r) for r in self.roots[:3]) + (", ..." if len(self.roots) > 3 else "")
            raise ConfigError(f"{named_by}: {key} {written} lies outside the config's tree and the allowed roots "
                              f"({roots}); refused (add a root to {ROOTS_ENV} to allow it)")
        return path

    def read(self, path: Path) -> str:
        """The text of one config file, read within the scope's limits."""
        return read_text(path, self)


def read_text(path: str | os.PathLike, scope: Optional[ConfigScope] = None) -> str:
    """UTF-8 text of a regular file of at most MAX_FILE_BYTES, without following it into a device,
    a FIFO or /proc; `scope` (when given) also counts it against the load's totals."""
    path = Path(path)
    if _is_pseudo(path.resolve()):
        raise ConfigError(f"{path}: under {'/'.join(_PSEUDO)}; not a config file")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: not a regular file (a device, FIFO or folder); not a config file")
    if st.st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: {st.st_size} bytes is larger than a config may be ({MAX_FILE_BYTES})")
    if scope is not None:
        scope.files += 1
        if scope.files > MAX_FILES:
            raise ConfigError(f"{path}: a config may pull in at most {MAX_FILES} files")
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, open() must not hang.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError(f"{path}: not a regular file; not a config file")
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than a config may be ({MAX_FILE_BYTES} bytes)")
    if scope is not None:
        scope.bytes += len(data)
        if scope.bytes > MAX_TOTAL_BYTES:
            raise ConfigError(f"{path}: a config and its bases may hold at most {MAX_TOTAL_BYTES} bytes together")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}); not a config file") from None
