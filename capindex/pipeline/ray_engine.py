"""The Ray engine: the same ingest on a Ray cluster (`capindex ingest --engine ray`).

    driver       plan as locally; the planned files in chunks of batch_size -> a Ray Dataset
    CPU tasks    read + hash + decode a chunk (`decode.DecodeDataset`, `decode.collate`)
    actor pool   `infer.run_models` on it: one model load per actor, a GPU each when the
                 cluster has GPUs
    driver       each chunk's items and model output stream back (`iter_rows`) to the one
                 writer (`ingest.batch_changes`, `Sinks`), which commits it as locally

Only where the files are read and the models run changes (clip-retrieval's distributor
swap); the plan, the rows and the commits are the local engine's. One Dataset row is one
model batch, so the model sees exactly the batches the local engine makes and both engines
write the same captions, objects, tags and vectors.

Files are read by path on the worker that decodes them: every node must see them at the
same path (a shared filesystem). Every node runs the same capindex; a local Ray started
for the run gives its workers the driver's `sys.path`.

Faults: a file that cannot be read is an error row, as locally. A task or actor that dies
(a native crash, the OOM killer) is retried `retries` times by Ray; a chunk still lost is
then read again file by file, and a file whose worker still dies gets an error row
(`WORKER_DIED`). A killed driver loses only the chunks not yet committed; the next run,
with either engine, finds the committed files unchanged and reads the rest.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from importlib.util import find_spec
from typing import TYPE_CHECKING

from capindex.errors import EngineError
from capindex.pipeline.caption import CaptionerLike, provenance
from capindex.pipeline.detect import DeferredDetector
from capindex.pipeline.infer import Inferred, Work, run_models, work_for
from capindex.pipeline.options import IngestOptions, tuned_options
from capindex.pipeline.plan import Plan
from capindex.pipeline.report import Events

if TYPE_CHECKING:  # the decode stage imports torch: the driver needs it only for a lost file
    from capindex.pipeline.decode import Decoded

INSTALL_RAY = "the Ray engine needs Ray: pip install 'capindex[ray]'"
# Ray tries a dying task or actor call again this many times (Ray's own default for Ray Data
# is forever: one file that crashes its decoder would stall the run).
DEFAULT_RETRIES = 1
WORKER_DIED = "its Ray worker died while reading or captioning it, on every try"
# CPUs one model actor takes on a cluster without GPUs (its torch threads); half of the
# cluster's CPUs go to model actors, the other half to decode tasks.
CPU_ACTOR_CPUS = 4
# Ray Data logs each dataset's start and every retried failure; the run reports files itself.
_QUIET_LOGGERS = ("ray", "ray.data")


def require_ray() -> None:
    """Raise EngineError (one line, how to install it) when Ray Data cannot be imported."""
    if find_spec("ray") is None or find_spec("ray.data") is None or find_spec("pandas") is None:
        raise EngineError(INSTALL_RAY)


@dataclass
class RayEngine:
    """An `ingest.Engine` on Ray. `address` None starts a local Ray for the run (the
    machine's CPUs, no dashboard); "auto" or HOST:PORT joins a running cluster. A process
    that already called `ray.init` is used as it is. `device` "cpu" keeps the models off
    the cluster's GPUs."""

    address: str | None = None
    device: str = "auto"
    retries: int = DEFAULT_RETRIES

    def __post_init__(self) -> None:
        require_ray()

    def __call__(self, plan: Plan, captioner: CaptionerLike, detector: DeferredDetector | None,
                 options: IngestOptions, events: Events) -> Iterator[tuple[list[Decoded], Inferred]]:
        started = time.monotonic()
        with _ray_session(self.address) as ray, _ray_quiet(ray):
            plan.summary.loading_seconds += time.monotonic() - started  # set-up, as a model load
            resources = ray.cluster_resources()
            gpus = int(resources.get("GPU", 0)) if self.device != "cpu" else 0
            options = tuned_options(options, "cuda" if gpus else "cpu")
            events.start(len(plan.tasks))
            detector_id = detector.detector_id if detector else None
            embedding_id = getattr(captioner, "embedding_id", None)
            work = [work_for(task, detector_id, embedding_id) for task in plan.tasks]
            stage = _Stages(ray, plan, work, captioner, detector, options, self.retries,
                            int(resources.get("CPU", 1)), gpus)
            size = options.batch_size
            lost = yield from stage.run([range(s, min(s + size, len(work)))
                                         for s in range(0, len(work), size)])
            again = [range(i, i + 1) for chunk in lost if len(chunk) > 1 for i in chunk]
            if again:  # a chunk whose worker kept dying: each of its files again, alone
                lost = [chunk for chunk in lost if len(chunk) == 1] + (yield from stage.run(again))
            if lost:
                from capindex.pipeline.decode import Decoded

                yield [Decoded(chunk.start, error=WORKER_DIED) for chunk in lost], Inferred()


class _Stages:
    """One Ray Dataset pass over chunks of planned files: decode tasks, then model actors."""

    def __init__(self, ray, plan: Plan, work: list[Work], captioner, detector, options,
                 retries: int, cpus: int, gpus: int) -> None:
        self.ray, self.plan, self.work = ray, plan, work
        self.captioner, self.detector, self.options = captioner, detector, options
        self.retries = retries
        if gpus:  # one actor per GPU; decoding gets the CPUs
            self.actors, self.actor_cpus, self.actor_gpus = gpus, 1, 1
        else:
            self.actor_cpus = max(1, min(CPU_ACTOR_CPUS, cpus // 2))
            self.actors, self.actor_gpus = max(1, cpus // (2 * self.actor_cpus)), 0

    def run(self, chunks: list[range]) -> Iterator[tuple[list[Decoded], Inferred]]:
        """Yield each chunk's items and model output as it comes back; return the chunks
        that never did (their task or actor died on every try)."""
        ray = self.ray
        rows = [{"start": chunk.start, "spec": pickle.dumps(
            ([self.plan.tasks[i].found.path for i in chunk], [self.work[i] for i in chunk]))}
            for chunk in chunks]
        data = ray.data.from_items(rows, override_num_blocks=len(rows))  # a task per chunk
        with warnings.catch_warnings():  # retry limits are Ray's deprecated ray_remote_args
            warnings.simplefilter("ignore", DeprecationWarning)
            data = data.map(_decode_chunk, num_cpus=1, max_retries=self.retries, fn_kwargs={
                "reuse_hashes": self.plan.reuse_hashes, "enrich_hashes": self.plan.enrich_hashes,
                "max_file_size": self.options.max_file_size})
            data = data.map(_ModelActor, fn_constructor_args=(self.captioner, self.detector),
                            compute=ray.data.ActorPoolStrategy(size=self.actors),
                            num_cpus=self.actor_cpus, num_gpus=self.actor_gpus,
                            max_restarts=-1, max_task_retries=self.retries)
        done = set()
        rows = iter(data.iter_rows())
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except ray.exceptions.RayError as exc:  # not a file's fault: the run stops here
                raise EngineError(f"the Ray run failed: {_first_line(exc)}; what was committed "
                                  "is kept: run the same command again to go on") from exc
            # Pickles made by this run's own tasks, passed through Ray's object store.
            done.add(row["start"])
            yield pickle.loads(row["items"]), pickle.loads(row["inferred"])
        return [chunk for chunk in chunks if chunk.start not in done]


def _decode_chunk(row: dict, reuse_hashes: frozenset[str], enrich_hashes: frozenset[str],
                  max_file_size: int | None) -> dict:
    """A Ray task: read, hash and decode one chunk's files as the local decode workers do."""
    import torch

    from capindex.pipeline.decode import DecodeDataset, collate

    torch.set_num_threads(1)  # as a local decode worker
    paths, _ = pickle.loads(row["spec"])
    dataset = DecodeDataset(paths, reuse_hashes, max_file_size=max_file_size,
                            enrich_hashes=enrich_hashes)
    batch = collate([dataset[i] for i in range(len(paths))])
    for item in batch.items:
        item.index += row["start"]  # the task's position in the plan
    pixels, shape = b"", []
    if batch.images is not None:  # (n, 3, H, W) channels-last: its bytes are (n, H, W, 3)
        hwc = batch.images.permute(0, 2, 3, 1)
        pixels, shape = hwc.numpy().tobytes(), list(hwc.shape)
    return {"start": row["start"], "spec": row["spec"], "items": pickle.dumps(batch.items),
            "pixels": pixels, "shape": shape}


class _ModelActor:
    """A Ray actor: the captioner and the detector, loaded once (when first needed), run on
    each decoded chunk."""

    def __init__(self, captioner: CaptionerLike, detector: DeferredDetector | None) -> None:
        self.captioner = captioner
        self.detector = detector

    def __call__(self, row: dict) -> dict:
        import numpy as np
        import torch

        from capindex.pipeline.decode import DecodedBatch

        _, work = pickle.loads(row["spec"])
        items = pickle.loads(row["items"])
        images = None
        if row["pixels"]:  # back to the decode stage's (n, 3, H, W) channels-last pixels
            hwc = np.frombuffer(row["pixels"], np.uint8).reshape(row["shape"]).copy()
            images = torch.from_numpy(hwc).permute(0, 3, 1, 2)
        inferred = run_models(DecodedBatch(items, images),
                              [work[item.index - row["start"]] for item in items],
                              self.captioner, self.detector, lambda: provenance(self.captioner))
        return {"start": row["start"], "items": row["items"], "inferred": pickle.dumps(inferred)}


def _first_line(exc: BaseException) -> str:
    """The last line of a Ray error that says what went wrong (Ray wraps the worker's
    traceback into its message)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in reversed(lines) if "Error" in line), lines[-1] if lines else
                type(exc).__name__)


@contextmanager
def _ray_session(address: str | None):
    """Ray, initialised for the run (and shut down after it) unless this process already is."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise EngineError(f"{INSTALL_RAY} ({exc})") from exc
    started = not ray.is_initialized()
    if started:
        settings = {"log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if address is None:  # its workers import what this process imports
                path = os.pathsep.join(p for p in sys.path if p)
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False,
                         runtime_env={"env_vars": {"PYTHONPATH": path}}, **settings)
            else:
                ray.init(address=address, **settings)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise EngineError(f"cannot start or reach {where} ({exc})") from exc
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _ray_quiet(ray):
    """Ray Data's settings for the run, and its chatter kept off the run's output: no
    progress bars, its loggers at ERROR, and what Ray's driver threads print about dying
    workers sent to stderr (stdout is the command's, e.g. `--json`). A block whose task
    failed on every try is skipped (the run reads its files again alone), not fatal."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in
             ("max_errored_blocks", "enable_progress_bars", "print_on_execution_start")}
    context.max_errored_blocks = -1
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    levels = {name: logging.getLogger(name).level for name in _QUIET_LOGGERS}
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with redirect_stdout(sys.stderr):
            yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
