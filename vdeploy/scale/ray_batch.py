"""Batch prediction and evaluation on a Ray cluster (`vdeploy predict/eval --ray [ADDRESS]`).

The driver (the process the user started) lists the images, reads each file's bytes and sends them
to Ray actors that each hold one Predictor; the predictions come back to the driver, which writes
them through the stores a single-process run uses (eval: the JSON-lines store under --out;
predict: a JSON-lines journal beside --out, turned into the usual results file at the end). So:

- only the driver's machine needs the images and the outputs; every node needs vdeploy and the
  bundle at the same path (or the model spec's files);
- a killed driver loses only the images in flight (its actors die with it) and the same command
  resumes from the store, each image once;
- an actor decodes and predicts exactly as Predictor.predict does in one process, so the results
  equal a single-process run with the same backend threads (--ray-cpus-per-actor).

Torch-free: actors build their Predictor with a factory the caller hands over (Ray pickles it), so
a model spec's torch side is reached only through that factory. Importing this module does not
import Ray; connecting does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from ..errors import UserError
from ..fileio import atomic_write_json
from ..runtime.io import decode_image, max_image_pixels, read_image

INSTALL = "pip install 'vdeploy[ray]'"
IN_FLIGHT_PER_ACTOR = 2  # one image predicting, one waiting behind it: an actor never idles on the driver
ACTOR_RESTARTS = 3       # an actor whose node is lost is rebuilt elsewhere and its images retried
JOURNAL_SUFFIX = ".ray-partial"
CONNECT_TIMEOUT = 10.0   # seconds to reach a HOST:PORT head before giving up


def add_ray_arguments(p) -> None:
    g = p.add_argument_group("Ray (docs/scale-out.md)")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="predict on a Ray cluster: `auto` (the running one), HOST:PORT, or no value for a new "
                        f"local one; put it after the positional arguments or write --ray=ADDRESS ({INSTALL})")
    g.add_argument("--ray-actors", type=int, metavar="N",
                   help="--ray: actors, each holding one predictor (default: as many as the cluster's CPUs allow)")
    g.add_argument("--ray-cpus-per-actor", type=float, default=1.0, metavar="C",
                   help="--ray: CPUs reserved per actor, also its backend threads unless --threads (default 1; "
                        "a node's core count gives one actor per node)")


@dataclass
class RayOptions:
    address: str = "local"          # "local": a new cluster in this process; "auto": the running one; HOST:PORT
    actors: Optional[int] = None    # None: as many as the cluster's CPUs allow
    cpus_per_actor: float = 1.0

    @classmethod
    def from_args(cls, args) -> Optional["RayOptions"]:
        """None when --ray was not given."""
        if getattr(args, "ray", None) is None:
            if getattr(args, "ray_actors", None) is not None:
                raise UserError("--ray-actors needs --ray")
            return None
        if args.ray_actors is not None and args.ray_actors < 1:
            raise UserError(f"--ray-actors must be at least 1, got {args.ray_actors}")
        if not args.ray_cpus_per_actor > 0:
            raise UserError(f"--ray-cpus-per-actor must be positive, got {args.ray_cpus_per_actor}")
        if Path(args.ray).exists():  # `predict B --ray imgs/`: argparse took an image argument as the address
            raise UserError(f"--ray {args.ray}: is a file or folder, not a cluster address; "
                            "write --ray=ADDRESS or put --ray after the images")
        import_ray()  # before any model is opened
        return cls(args.ray, args.ray_actors, args.ray_cpus_per_actor)

    @property
    def backend_threads(self) -> int:
        return max(1, int(self.cpus_per_actor))


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(f"--ray needs Ray, which is not installed here: {INSTALL}") from None
    return ray


class PredictorActor:
    """One Predictor for the life of the actor (rebuilt when Ray restarts the actor elsewhere)."""

    def __init__(self, make_predictor: Callable[[], object], max_pixels: int):
        import socket

        self.max_pixels, self.predictor, self.error = max_pixels, None, None
        try:
            self.predictor = make_predictor()
            if hasattr(self.predictor, "load"):
                self.predictor.load()
        except UserError as e:  # e.g. the bundle is not at this path on this node
            self.error = f"on Ray node {socket.gethostname()}: {e}"

    def ready(self) -> Optional[str]:
        return self.error

    def predict(self, name: str, data: bytes):
        """(Prediction, None), or (None, the one-line reason) for an image that cannot be decoded."""
        try:
            image = decode_image(data, name, self.max_pixels)
        except UserError as e:
            return None, str(e)
        return self.predictor.predict(image), None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        read_image(path)  # raises the same one-line UserError as a single-process run
        raise


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """A UserError within `timeout` when nothing answers at HOST:PORT (ray.init would retry for minutes)."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address}: not a cluster address (auto, HOST:PORT, ray://HOST:PORT, "
                        "or no value for a new local cluster)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise UserError(f"--ray {address}: no Ray cluster answers there ({e.strerror or e})") from None


class RayCluster:
    """The driver's connection: `with RayCluster(options) as c: c.pool(make_predictor)`."""

    def __init__(self, options: RayOptions):
        self.options = options
        self.ray = import_ray()

    def __enter__(self) -> "RayCluster":
        address, kw = self.options.address, {}
        if address == "local":  # a private cluster: no dashboard, no usage report from a batch job
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kw = {"include_dashboard": False}
        elif address != "auto":
            _check_reachable(address)
        try:
            self.ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, **kw)
        except (ConnectionError, ValueError) as e:
            raise UserError(f"--ray {address}: cannot connect to a Ray cluster: {str(e).splitlines()[0]}") from None
        return self

    def __exit__(self, *exc) -> None:
        self.ray.shutdown()

    def actor_count(self) -> int:
        cpus, each = self.ray.cluster_resources().get("CPU", 0), self.options.cpus_per_actor
        fit = int(cpus // each)
        n = self.options.actors or max(fit, 1)
        if n > fit:  # Ray would wait for CPUs that never come
            raise UserError(f"{n} Ray actor(s) of {each:g} CPU(s) need {n * each:g} CPUs; the cluster has {cpus:g} "
                            "(--ray-actors, --ray-cpus-per-actor)")
        return n

    def pool(self, make_predictor: Callable[[], object]) -> "PredictorPool":
        return PredictorPool(self, make_predictor)


class PredictorPool:
    """Actors holding a Predictor each: created by load(), released by close() (or by the end of
    predict_all, so that the next backend of an evaluation gets the CPUs)."""

    def __init__(self, cluster: RayCluster, make_predictor: Callable[[], object]):
        self.cluster, self.ray, self.make_predictor = cluster, cluster.ray, make_predictor
        self.actors: list = []

    def load(self) -> "PredictorPool":
        n = self.cluster.actor_count()
        actor_class = self.ray.remote(PredictorActor).options(
            num_cpus=self.cluster.options.cpus_per_actor, scheduling_strategy="SPREAD",
            max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS)
        self.actors = [actor_class.remote(self.make_predictor, max_image_pixels()) for _ in range(n)]
        errors = [e for e in self.ray.get([a.ready.remote() for a in self.actors]) if e]
        if errors:
            self.close()
            raise UserError(errors[0])
        return self

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []

    def map(self, items: Iterable[tuple[str, Path]]) -> Iterator[tuple[str, Path, object, Optional[str]]]:
        """(key, path, Prediction or None, error or None) for each (key, path), in completion order;
        at most IN_FLIGHT_PER_ACTOR images per actor are read and in flight at a time."""
        if not self.actors:
            self.load()
        from ray.exceptions import RayActorError

        free = deque(a for a in self.actors for _ in range(IN_FLIGHT_PER_ACTOR))
        pending: dict = {}
        todo = iter(items)
        while True:
            while free:
                item = next(todo, None)
                if item is None:
                    break
                key, path = item
                try:
                    data = _read_bytes(Path(path))
                except UserError as e:  # gone or unreadable since it was listed
                    yield key, path, None, str(e)
                    continue
                actor = free.popleft()
                pending[actor.predict.remote(str(path), data)] = (actor, key, path)
            if not pending:
                return
            ready, _ = self.ray.wait(list(pending), num_returns=1)
            actor, key, path = pending.pop(ready[0])
            free.append(actor)
            try:
                pred, error = self.ray.get(ready[0])
            except RayActorError as e:
                raise UserError(f"a Ray actor was lost for good ({type(e).__name__}); what is stored is kept: "
                                "run the same command again to resume") from None
            yield key, path, pred, error

    def predict_all(self, samples: Sequence, store, classes: list[str], advance: Callable[[int], None]) -> int:
        """vdeploy.eval.runner's hook: predict every sample not in `store` yet, record by record."""
        from ..eval.records import to_record

        done = store.done()
        todo = [s for s in samples if s.key not in done]
        try:
            for key, _, pred, error in self.map((s.key, s.path) for s in todo):
                if error:
                    raise UserError(error)  # as the single-process pipeline: an unreadable image stops the run
                store.add(to_record(pred, key, classes, store.side_dir))
                advance(1)
        finally:
            self.close()
        return len(todo)


def journal_dir(out: Path) -> Path:
    return out.with_name(out.name + JOURNAL_SUFFIX)


def _open_journal(out: Path, identity: dict):
    """The JSON-lines store of a predict run, beside its output; UserError if it holds another run."""
    from ..eval.store import JsonlStore

    folder = journal_dir(out)
    run_file = folder / "run.json"
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if old != identity:
            raise UserError(f"{folder}: holds an interrupted run of another model or image list; "
                            "delete it or give another --out")
    else:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_file, identity)
    return JsonlStore(folder)


def predict_images(pool: PredictorPool, images: Sequence[tuple[Path, str]], writer, model_id: str, *,
                   on_prediction: Callable[[Path, str, object], None] = lambda path, name, pred: None,
                   on_skip: Callable[[str], None] = lambda reason: None, strict: bool = False) -> list[str]:
    """`vdeploy predict --ray`: every (path, name) not journalled yet goes to the actors; results files
    are written from the journal in the images' order at the end (label maps and embeddings as
    they come, each file atomically), then the journal is removed. Returns the skipped images' reasons."""
    names = [name for _, name in images]
    identity = {"model": model_id, "names_sha256": hashlib.sha256("\n".join(names).encode()).hexdigest()}
    journal = _open_journal(writer.out, identity)
    handler, bad = writer.handler, []
    try:
        done = journal.done()
        for name, path, pred, error in pool.map((name, path) for path, name in images if name not in done):
            if error:
                if strict:
                    raise UserError(error)
                on_skip(error)
                bad.append(error)
                continue
            if handler.writes_json:
                rec = {"image": name, "results": handler.json_results(pred, name, writer.classes)}
            else:
                writer.add(name, pred)
                rec = {"image": name}
            on_prediction(path, name, pred)
            journal.add(rec)  # last: an image whose outputs are not all written is predicted again
    finally:
        journal.close()
        pool.close()
    records = journal.records(names)
    if handler.writes_json:
        with writer:
            for name in names:
                if name in records:
                    writer.add_json(records[name]["results"])
    else:
        writer.images = writer.records = len(records)  # the whole run's, resumed images included
    shutil.rmtree(journal_dir(writer.out))
    return bad
