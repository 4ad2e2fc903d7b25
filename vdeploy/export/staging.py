"""Build a folder beside its destination and put it in place so that the destination holds the old
folder or the new one at every instant, SIGKILL included.

- Where the OS can exchange two paths in one rename (Linux `renameat2(RENAME_EXCHANGE)`, macOS
  `renamex_np(RENAME_SWAP)`), the complete staging folder and the old folder trade places
  atomically; the old one, now under the staging name, is deleted afterwards.
- Elsewhere (another OS, or a filesystem without the exchange) the old folder is renamed aside and
  the new one renamed in: a kill between those two renames leaves the destination missing, and the
  next job in the same parent folder renames the old one back (see `clean_stale`).

Every job owns three names beside the destination, `.NAME.vdeploy-PID-TAG.{lock,staging,old}`. The
lock file is held with flock(2) while the job runs, so a later job knows which leftovers are stale
(killed exports) and removes only those; nothing else in the folder is ever touched.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import secrets
import shutil
import sys
from pathlib import Path
from typing import Callable, Iterator, Optional

try:
    import fcntl
except ImportError:  # Windows: liveness falls back to the PID in the name
    fcntl = None

_JOB_RE = re.compile(r"^\.(?P<name>.+)\.vdeploy-(?P<pid>\d+)-(?P<tag>[0-9a-f]{8})\.(?P<kind>lock|staging|old)$")
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2      # macOS sys/stdio.h
# errno values that mean "this OS or filesystem cannot exchange", as opposed to a real failure
_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)}


def _reached(step: str) -> None:
    """Called at each step of a swap; tests replace it to pause or kill the process right there."""


def _libc_function(name: str):
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") if sys.platform == "darwin" else None, use_errno=True)
        return getattr(libc, name)
    except (OSError, AttributeError):  # no such libc function (glibc < 2.28, an old macOS)
        return None


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap the two existing paths `a` and `b`; False where the OS or filesystem cannot."""
    if sys.platform.startswith("linux"):
        fn = _libc_function("renameat2")
        if fn is None:
            return False
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin":
        fn = _libc_function("renamex_np")
        if fn is None:
            return False
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rc = fn(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextlib.contextmanager
def _stale_lock(lock: Optional[Path], pid: int) -> Iterator[bool]:
    """Yield True (holding the lock) when the job that owns `lock` is gone."""
    if fcntl is None or lock is None:
        # A job takes its lock before it creates anything else, so no lock file means it was killed
        # at its very start or is on Windows: the PID decides.
        yield not _pid_alive(pid)
        return
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:  # its owner finished meanwhile
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False  # a running job holds it
            return
        yield True
    finally:
        os.close(fd)


def clean_stale(parent: Path) -> list[str]:
    """Remove what killed jobs left in `parent`; put back a folder moved aside by an interrupted swap.

    Returns what was done, one line per item (for a log)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    jobs: dict[tuple[str, str], dict[str, Path]] = {}
    for n in names:
        m = _JOB_RE.match(n)
        if m:
            jobs.setdefault((m["pid"], m["tag"]), {})[m["kind"]] = parent / n
    done = []
    for (pid, tag), parts in sorted(jobs.items()):
        with _stale_lock(parts.get("lock"), int(pid)) as stale:
            if not stale:
                continue
            if "old" in parts:
                dest = parent / _JOB_RE.match(parts["old"].name)["name"]
                if os.path.lexists(dest):
                    _remove(parts["old"])
                    done.append(f"removed {parts['old']}")
                else:
                    try:
                        os.rename(parts["old"], dest)
                        done.append(f"restored {dest} (an export was killed while replacing it)")
                    except OSError as e:  # something appeared at dest meanwhile: keep both
                        done.append(f"kept {parts['old']}: cannot put it back at {dest} ({e.strerror})")
                        continue
            if "staging" in parts:
                _remove(parts["staging"])
                done.append(f"removed {parts['staging']}")
            if "lock" in parts:
                _remove(parts["lock"])
    return done


class StagingJob:
    """A staging folder beside `dest`, locked for this process; see the module docstring."""

    def __init__(self, dest: Path):
        self.parent = dest.parent
        self._job = f"vdeploy-{os.getpid()}-{secrets.token_hex(4)}"
        self.lock = self.parent / f".{dest.name}.{self._job}.lock"
        self.staging = self.parent / f".{dest.name}.{self._job}.staging"
        self._aside: list[tuple[Path, Path]] = []  # (old folder moved aside, where it came from)
        self._fd: Optional[int] = None

    def __enter__(self) -> "StagingJob":
        self._fd = os.open(self.lock, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            self.staging.mkdir(mode=0o755)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        _remove(self.staging)
        for old, dest in self._aside:
            if os.path.lexists(old) and not os.path.lexists(dest):  # failed between the two renames
                os.rename(old, dest)
            else:
                _remove(old)
        _remove(self.lock)
        os.close(self._fd)

    def publish(self, dest: Path, check: Callable[[Path], None] = lambda p: None) -> None:
        """Put the staging folder at `dest` (in this job's parent folder), replacing what is there.

        `check(dest)` is called first on an existing `dest` and raises to refuse replacing it."""
        assert dest.parent == self.parent, (dest, self.parent)
        _reached("staged")
        if os.path.lexists(dest):
            check(dest)
            if exchange(self.staging, dest):
                _reached("exchanged")  # dest is the new folder; the staging name holds the old one
                return
            # Named after `dest`, so that clean_stale knows where to put it back.
            old = self.parent / f".{dest.name}.{self._job}.old"
            self._aside.append((old, dest))
            os.rename(dest, old)
            _reached("aside")  # the window clean_stale repairs
            os.rename(self.staging, dest)
        else:
            os.rename(self.staging, dest)
        _reached("renamed")
