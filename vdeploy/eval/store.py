"""Where a backend's prediction records go: an append-only JSON-lines file that survives a
kill. Resuming reads back every complete line (the last one wins for a key, so nothing is
counted twice) and cuts off a line the kill left half-written."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from .records import resolve


class MemoryStore:
    """No --out: records live for the run only."""

    def __init__(self, side_dir: Optional[Path] = None):
        self.side_dir = side_dir
        self._records: dict[str, dict] = {}

    def done(self) -> set[str]:
        return set(self._records)

    def add(self, rec: dict) -> None:
        self._records[rec["image"]] = rec

    def records(self, keys) -> dict[str, dict]:
        return {k: resolve(self._records[k], self.side_dir or Path(".")) for k in keys if k in self._records}

    def close(self) -> None:
        pass


class JsonlStore(MemoryStore):
    """DIR/predictions.jsonl plus side files (label maps) under DIR."""

    def __init__(self, folder: Path, fsync_every: int = 32):
        super().__init__(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "predictions.jsonl"
        self._records = self._read_back()
        self._file = open(self.path, "a", encoding="utf-8")
        self._fsync_every = fsync_every
        self._unsynced = 0

    def _read_back(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        records, good_end = {}, 0
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # cut short by a kill
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    break
                records[rec["image"]] = rec
                good_end += len(line)
        if good_end != self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
        return records

    def add(self, rec: dict) -> None:
        # one write() of a whole line; a kill can only leave the last line incomplete
        self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._file.flush()
        self._unsynced += 1
        if self._unsynced >= self._fsync_every:
            os.fsync(self._file.fileno())
            self._unsynced = 0
        super().add(rec)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
