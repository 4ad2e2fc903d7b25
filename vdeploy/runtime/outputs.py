"""Where predictions go: the one results format `predict` and `from-bin` write, and
`eval --predictions` and any COCO tool read.

Detections and classes: one JSON array of results (COCO results for detectors) in a file that
replaces `out` only when the run ends well, written record by record so that the records are
never all in memory. Label maps and embeddings: one file per image under the folder `out`
(NAME.png, NAME.npy), each written atomically as it comes.
"""
from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Iterable, Optional

from ..errors import UserError
from .io import atomic_output
from .prediction import Prediction
from .tasks import get_task


def output_stems(names: Iterable[str]) -> dict[str, str]:
    """Per image name, the name its files take: without the image's extension (`a/x.png` ->
    label map `a/x.png`, embedding `a/x.npy`, drawing `a/x.jpg`), except where two images of the
    run differ only by it (`x.png`, `x.jpg`): those keep it (`x.png.png`, `x.jpg.png`)."""
    names = list(names)
    bare = {n: str(PurePosixPath(n).with_suffix("")) if PurePosixPath(n).suffix else n for n in names}
    counts = Counter(bare.values())
    return {n: bare[n] if counts[bare[n]] == 1 else n for n in names}


class ResultsWriter:
    def __init__(self, out: str | Path, task: str, classes: list[str], names: Optional[Iterable[str]] = None):
        """names: every image name of the run, to name their files (output_stems); without them a
        name is used as it is."""
        self.out, self.classes = Path(out), classes
        self.stems = output_stems(names) if names is not None else {}
        self.handler = get_task(task)
        self.images = self.records = 0
        self._file = None
        self._stack = contextlib.ExitStack()
        if self.handler.writes_json and self.out.is_dir():
            raise UserError(f"--out {self.out}: is a folder; {task} results go to a .json file")
        if not self.handler.writes_json and self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out}: is a file; {task} results go to a folder (one file per image)")

    def __enter__(self) -> "ResultsWriter":
        if self.handler.writes_json:
            self._file = self._stack.enter_context(atomic_output(self.out, "w"))
        return self

    def add(self, name: str, pred: Prediction) -> None:
        if self._file is not None:
            self.add_json(self.handler.json_results(pred, name, self.classes))
            return
        self.handler.write_output(self.out, self.file_stem(name), pred)
        self.records += 1
        self.images += 1

    def file_stem(self, name: str) -> str:
        """The name of an image's files (label map, embedding, drawing), before their suffix."""
        return self.stems.get(name, name)

    def add_json(self, results) -> None:
        """One image's results as its task's json_results made them (kept by a resumable run)."""
        for r in results:
            self._file.write(("[\n" if self.records == 0 else ",\n") + json.dumps(r))
            self.records += 1
        self.images += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None and self._file is not None and not self.images:
            # nothing was predicted: discard the new file, keep whatever results file was there
            with contextlib.suppress(_NothingWritten):
                self._stack.__exit__(_NothingWritten, _NothingWritten(), None)
            return False
        if exc_type is None and self._file is not None:
            self._file.write("\n]\n" if self.records else "[]\n")
        return self._stack.__exit__(exc_type, exc, tb)

    def summary(self) -> str:
        return f"{self.records if self.handler.writes_json else self.images} {self.handler.output_noun}"


class _NothingWritten(Exception):
    """Raised into the atomic output so that it is discarded; swallowed by ResultsWriter."""
