"""`srgan upscale --cluster`: the same jobs, run by Ray actors across machines.

Each worker is a Ray actor that loads the model once and runs batches of files through the
core's `FilePipeline`, as a local run does; inputs and outputs are paths on a file system that
every node sees. The driver streams: it plans jobs one at a time, keeps a bounded number of
batches in flight (`BATCHES_PER_WORKER` per worker) and reports each result as it arrives, so
it never holds the whole list of inputs or results.

Faults are Ray's to handle: a worker whose process or node dies is restarted (elsewhere when
its node is gone) and its unfinished batch is retried there, up to `RESTARTS` times. Outputs
are written atomically, and a retried file whose output an earlier attempt already wrote is
left as it is. Ray is an optional dependency, imported only here.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from itertools import islice
from pathlib import Path
from typing import Any

from srgan.engines import (
    FilePipeline,
    FileResult,
    FileStatus,
    FileTask,
    OutputOptions,
    PipelineSettings,
    Precision,
    SrganError,
    TileSettings,
    create_upscaler,
    load_model,
)

from .reporting import Reporter

BATCHES_PER_WORKER = 2
"""Batches queued at each worker: one running, one waiting, so a worker never idles on the driver."""
RESTARTS = 3
"""Times a worker is restarted, and a batch retried, after its process or node dies."""
STOP_SECONDS = 30.0
"""How long Ctrl-C waits for workers to finish the files they are writing."""


class ClusterError(SrganError):
    """Ray is missing, or the cluster cannot be reached or used."""


class Address(str, Enum):
    LOCAL = "local"
    AUTO = "auto"


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker needs to build its `Upscaler` and pipeline; paths must exist on every node."""

    model_path: Path
    device: str
    precision: Precision
    tiles: TileSettings
    backend: str
    engines_dir: Path | None
    options: OutputOptions
    max_pixels: int
    cpus: float


@dataclass(frozen=True)
class ClusterSettings:
    """address: 'local' (start Ray here), 'auto' (RAY_ADDRESS or the cluster this machine is in) or
    'ray://host:port'. workers: None sizes the pool to the cluster (one per GPU share, else one per
    node). gpus_per_worker: None takes 1 where the cluster has GPUs, else 0. files_per_batch: files
    sent to a worker in one call."""

    address: str
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    files_per_batch: int = 4


def import_ray() -> Any:
    """The `ray` module, or a one-line error saying what to install."""
    try:
        import ray
    except ImportError:
        raise ClusterError("--cluster needs Ray, which is not installed: pip install 'srgan[cluster]'") from None
    return ray


class Worker:
    """One Ray actor: a loaded model and `Upscaler`, processing batches of files in turn."""

    def __init__(self, settings: WorkerSettings) -> None:
        import torch

        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.problem: str | None = None
        torch.set_num_threads(max(1, int(settings.cpus)))
        try:
            model = load_model(settings.model_path)
            self.upscaler = create_upscaler(
                model, settings.device, settings.precision, settings.tiles, settings.backend, settings.engines_dir
            )
        except SrganError as error:
            # Raised here, the actor would be restarted in a loop; the driver asks `ready` instead.
            self.problem = f"worker {self.name}: {error}"
            return
        self.pipeline = FilePipeline(
            self.upscaler,
            settings.options,
            PipelineSettings(readers=1, read_ahead=2, encoders=1, max_pixels=settings.max_pixels),
        )

    def ready(self) -> tuple[str, str | None, str]:
        """(worker name, the problem that keeps it from working or None, its backend's name)."""
        backend = self.upscaler.backend.name if self.problem is None else ""
        return self.name, self.problem, backend

    def process(self, tasks: list[FileTask]) -> tuple[str, list[FileResult]]:
        """Run a batch through the pipeline; the results of the files finished before a `halt`."""
        with self.lock:  # the model is used by one batch at a time
            return self.name, [_portable(result) for result in self.pipeline.run(tasks, cancel=self.stop)]

    def halt(self) -> None:
        """Stop between files: the image in hand is abandoned, results being written are finished."""
        self.stop.set()


def _portable(result: FileResult) -> FileResult:
    """The result, with an error that cannot travel back to the driver replaced by its one line."""
    if result.error is None:
        return result
    try:
        pickle.dumps(result.error)
    except Exception:  # noqa: BLE001 - any exception that does not pickle
        return replace(result, error=SrganError(result.detail))
    return result


Report = Callable[[FileResult, str], None]
"""Called on the driver with each file's result and the name of the worker that did it ('' for none)."""


def run_on_cluster(
    tasks: Iterable[FileTask],
    total: int,
    model_label: str,
    cluster: ClusterSettings,
    worker: WorkerSettings,
    reporter: Reporter,
    report: Report,
) -> None:
    """Process `tasks` on a Ray cluster: `reporter.start` once the workers are up, then
    `report(result, worker)` for every task, in the order they finish.

    Tasks should have `skip_existing` set unless outputs are to be replaced: a retried file
    whose output exists then counts as done. Stale temporary files that dead workers left in
    the output folders are removed at the end. Raises ClusterError when Ray is missing, the
    cluster cannot be reached, or a worker cannot start (with its reason).
    """
    ray = import_ray()
    # Ray prints raylet and worker messages (a node's death, say) on the driver's sys.stdout;
    # they go to stderr, so that stdout stays the reporter's (JSON lines must stay parseable).
    with contextlib.redirect_stdout(sys.stderr):
        _run(ray, tasks, total, model_label, cluster, worker, reporter, report)


def _run(
    ray: Any,
    tasks: Iterable[FileTask],
    total: int,
    model_label: str,
    cluster: ClusterSettings,
    worker: WorkerSettings,
    reporter: Reporter,
    report: Report,
) -> None:
    started_here = _connect(ray, cluster)
    folders: set[Path] = set()

    def noted(stream: Iterable[FileTask]) -> Iterator[FileTask]:
        for task in stream:
            folders.add(task.target.parent)
            yield task

    try:
        actors, backend = _start_workers(ray, cluster, worker)
        reporter.start(total, model_label, f"{backend} × {len(actors)} Ray workers")
        _drive(ray, actors, noted(tasks), cluster.files_per_batch, reporter, report)
    finally:
        _sweep(folders)
        if started_here:
            ray.shutdown()


def _sweep(folders: Iterable[Path]) -> None:
    """Remove the temporary files (`.NAME.*.partial`) a worker killed mid-write left behind."""
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.name.startswith(".") and entry.name.endswith(".partial") and entry.is_file():
                        Path(entry.path).unlink(missing_ok=True)
        except OSError:
            continue


def _connect(ray: Any, cluster: ClusterSettings) -> bool:
    """Join or start Ray; True when this process started it (and must stop it)."""
    if ray.is_initialized():
        return False
    try:
        if cluster.address == Address.LOCAL.value:
            ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        else:
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterError(f"cannot reach the Ray cluster at '{cluster.address}': {_first_line(error)}") from None
    return True


def _start_workers(ray: Any, cluster: ClusterSettings, worker: WorkerSettings) -> tuple[list[Any], str]:
    """Start the worker actors and wait until each has loaded the model; (actors, backend name)."""
    resources = ray.cluster_resources()
    gpus = cluster.gpus_per_worker
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    count = cluster.workers
    if count is None:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        count = max(1, int(resources.get("GPU", 0) // gpus)) if gpus > 0 else max(1, alive)
    remote = ray.remote(
        num_cpus=worker.cpus,
        num_gpus=gpus,
        max_restarts=RESTARTS,
        max_task_retries=RESTARTS,
        max_concurrency=2,  # `halt` must get through while `process` runs; a lock keeps batches in turn
        scheduling_strategy="SPREAD",
    )(Worker)
    actors = [remote.remote(worker) for _ in range(count)]
    backends = set()
    for _, problem, backend in ray.get([actor.ready.remote() for actor in actors]):
        if problem is not None:
            raise ClusterError(problem)
        backends.add(backend)
    return actors, " / ".join(sorted(backends))


@dataclass
class _Batch:
    actor: Any
    tasks: list[FileTask]
    attempts: int = 1


def _drive(
    ray: Any, actors: list[Any], jobs: Iterable[FileTask], size: int, reporter: Reporter, report: Report
) -> None:
    """Keep every worker fed from the job stream and report results as they come back."""
    batches = _batches(jobs, size)
    in_flight: dict[Any, _Batch] = {}
    live = list(actors)

    def submit(actor: Any) -> bool:
        tasks = next(batches, None)
        if tasks is None:
            return False
        for task in tasks:
            reporter.begin(task.source)
        in_flight[actor.process.remote(tasks)] = _Batch(actor, tasks)
        return True

    try:
        for actor in live:
            for _ in range(BATCHES_PER_WORKER):
                submit(actor)
        while in_flight:
            done, _ = ray.wait(list(in_flight), num_returns=1)
            batch = in_flight.pop(done[0])
            try:
                name, results = ray.get(done[0])
            except ray.exceptions.RayActorError as error:
                if not isinstance(error, ray.exceptions.ActorUnavailableError):
                    live = [actor for actor in live if actor is not batch.actor]  # out of restarts
                if live and batch.attempts <= RESTARTS:
                    # Ray does not retry a call whose worker became unreachable mid-call (its
                    # node died); a batch is safe to run again (atomic writes, skip-existing).
                    actor = batch.actor if batch.actor in live else live[batch.attempts % len(live)]
                    retry = _Batch(actor, batch.tasks, batch.attempts + 1)
                    in_flight[actor.process.remote(batch.tasks)] = retry
                    continue
                for task in batch.tasks:
                    reason = f"{task.source}: its worker died {batch.attempts} times ({_first_line(error)})"
                    report(FileResult(task, FileStatus.FAILED, 0.0, SrganError(reason)), "")
                if not live:
                    _fail_the_rest(batches, in_flight, report)
                    return
                continue
            for result in results:
                report(_settled(result), name)
            if batch.actor in live:
                submit(batch.actor)
    except KeyboardInterrupt:
        _halt(ray, live, in_flight, report)
        raise


def _settled(result: FileResult) -> FileResult:
    """Only files whose output did not exist when planned are sent to workers, so one skipped
    there was written by an earlier attempt of this run (a worker that died after writing it)."""
    if result.status is FileStatus.SKIPPED:
        return FileResult(result.task, FileStatus.DONE, result.seconds)
    return result


def _batches(jobs: Iterable[FileTask], size: int) -> Iterator[list[FileTask]]:
    iterator = iter(jobs)
    while batch := list(islice(iterator, size)):
        yield batch


def _fail_the_rest(batches: Iterator[list[FileTask]], in_flight: dict[Any, _Batch], report: Report) -> None:
    for tasks in [batch.tasks for batch in in_flight.values()] + list(batches):
        for task in tasks:
            report(FileResult(task, FileStatus.FAILED, 0.0, SrganError(f"{task.source}: every worker died")), "")


def _halt(ray: Any, live: list[Any], in_flight: dict[Any, _Batch], report: Report) -> None:
    """Ctrl-C: let every worker finish the files it is writing, report them, then stop."""
    for actor in live:
        actor.halt.remote()
    deadline = time.monotonic() + STOP_SECONDS
    pending = list(in_flight)
    while pending and time.monotonic() < deadline:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        for reference in done:
            try:
                name, results = ray.get(reference)
            except ray.exceptions.RayError:
                continue
            for result in results:
                report(_settled(result), name)
    for actor in live:
        ray.kill(actor, no_restart=True)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__
