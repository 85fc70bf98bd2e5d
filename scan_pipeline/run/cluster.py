"""The page stage on a Dask cluster (`process --executor dask [--scheduler tcp://HOST:PORT]`).

The parent reads the files and sends each page to a remote cluster as the scanner's own JPEG or PNG
bytes when the page is a whole file, else as its pixels PNG-compressed, so workers need no shared
filesystem; each worker builds its context (Tesseract, models) once, with its first page; results
come back as they finish and the parent alone writes the ledger, exactly as with the local pool
(`batch.py`). Dask reschedules the task of a worker lost mid-page on another worker; the parent
consumes each page's result once, so a page is never lost nor written twice.

Needs the `dask` extra: `pip install 'scan-pipeline[dask]'`.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from scan_pipeline.core.errors import PipelineError
from scan_pipeline.core.records import PageImage, PageRef, PageResult
from scan_pipeline.page.load import decode_image
from scan_pipeline.run.process import WorkerContext
from scan_pipeline.run.worker import WorkerSetup, build_context, crashed_page, run_page

log = logging.getLogger(__name__)

WAIT_FOR_WORKERS_S = 60  # a remote cluster with no worker yet: how long to wait for one


@dataclass(frozen=True)
class PackedPage:
    """A page as it travels to a worker: the scanner's own JPEG or PNG bytes when the page is a whole
    file, else its pixels as a PNG (lossless), or raw on this machine.

    A fast PNG of a scan's noisy gray is ~0.55 of the raw size and costs the parent ~0.2 s a page
    (300 dpi A4): worth it on a network, not on loopback, where the raw pixels go as they are. The
    file's own bytes are smaller still and cost nothing to encode: the worker decodes them exactly
    as the parent did (`load.decode_image`).
    """

    ref: PageRef
    data: bytes | np.ndarray  # an image file's bytes, or the raw pixels, flat
    dpi: float
    shape: tuple[int, ...] = ()  # raw pixels: their shape (uint8); empty: data is an image file
    file_bytes: bool = False  # data is the input file itself, decoded as the loader decodes it

    @classmethod
    def pack(cls, page: PageImage, compress: bool = True) -> PackedPage:
        if not compress:
            pixels: np.ndarray = np.ascontiguousarray(page.pixels, dtype=np.uint8)
            # as an array, not bytes: Dask then sends it as it is (pickle 5, out of band), with no copy
            return cls(page.ref, pixels.reshape(-1), page.dpi, tuple(pixels.shape))
        if page.encoded:
            return cls(page.ref, page.encoded, page.dpi, file_bytes=True)
        pixels = cv2.cvtColor(page.pixels, cv2.COLOR_RGB2BGR) if page.pixels.ndim == 3 else page.pixels
        ok, buf = cv2.imencode(".png", pixels, [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast, most of the gain
        if not ok:
            raise PipelineError(f"cannot encode page {page.ref.page} of {page.ref.source_file} to send it")
        return cls(page.ref, buf.tobytes(), page.dpi)

    def unpack(self) -> PageImage:
        if self.shape:
            return PageImage(self.ref, np.asarray(self.data, np.uint8).reshape(self.shape), self.dpi)
        if self.file_bytes:
            assert isinstance(self.data, bytes)  # file_bytes: data is the input file's bytes
            return PageImage(self.ref, decode_image(self.data, self.ref.source_file), self.dpi)
        pixels = cv2.imdecode(np.frombuffer(self.data, np.uint8), cv2.IMREAD_UNCHANGED)
        if pixels is None:  # the PNG pack() wrote, damaged on the way
            raise PipelineError(f"cannot decode page {self.ref.page} of {self.ref.source_file} as sent")
        if pixels.ndim == 3:
            pixels = cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)  # PageImage colour pages are RGB
        return PageImage(self.ref, pixels, self.dpi)


# (run token, context) per worker thread: Tesseract is not thread-safe, and a worker started with
# --nthreads 2 runs two pages at once
_LOCAL = threading.local()


def _build_once(token: str, setup: WorkerSetup) -> WorkerContext:
    """The worker's context, built by its first page of a run (a worker replacing a lost one builds
    its own; a long-lived worker serving another run with another template or config rebuilds).

    Not in a worker plugin: registering one blocks the parent until every worker has built its
    context, while a first page can already be on its way."""
    held = getattr(_LOCAL, "context", None)
    if held is None or held[0] != token:
        held = _LOCAL.context = (token, build_context(setup))
    return held[1]


def _dask_task(packed: PackedPage, token: str, setup: WorkerSetup) -> PageResult:
    return run_page(packed.unpack(), _build_once(token, setup))


def _fast_worker_start() -> None:
    """Workers forked from a server that imported the pipeline once, not each started from scratch."""
    import multiprocessing

    import dask

    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver",
                     # on the machine the workers share with the parent, Dask's own sampling costs pages:
                     "distributed.worker.profile.enabled": False,  # a 10 ms stack sampler per worker
                     "distributed.admin.tick.interval": "500ms",  # event-loop health checks (20 ms)
                     # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 for its workers, which fixes glibc's
                     # thresholds low: every page's big arrays are then mapped and unmapped again, and a
                     # page took 15-30 % more CPU than in the local pool (measured with one worker)
                     "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None})
    multiprocessing.get_context("forkserver").set_forkserver_preload(["scan_pipeline.run.cluster", "distributed"])


def cluster_failure(ref: PageRef, exc: BaseException) -> PageResult:
    """The result of a page the cluster could not read: our own errors say why (a worker whose
    Pillow cannot decode the file sent), Dask's by their kind (KilledWorker, a lost scheduler)."""
    why = exc.message if isinstance(exc, PipelineError) else type(exc).__name__
    return crashed_page(ref, f"failed on the cluster ({why})")


class DaskExecutor:
    """Runs pages on a Dask cluster: a LocalCluster of `workers` processes, or the one at `scheduler`.

    A LocalCluster starts in the background (~0.6 s: importing Dask, forking its workers): the parent
    meanwhile counts and loads the first pages, which wait here until it is up, as a process pool's
    first pages wait for its workers."""

    def __init__(self, setup: WorkerSetup, workers: int, scheduler: str | None = None):
        self.cluster: Any = None
        self.client: Any = None
        self.workers = workers
        self._setup = setup
        self._token = uuid.uuid4().hex
        # a remote cluster gets files' own bytes, else PNGs; a LocalCluster (loopback) raw pixels
        self.wants_encoded = scheduler is not None
        self._lock = threading.Lock()
        self._waiting: list[tuple[PageImage, Future[PageResult]]] = []
        self._failure: PipelineError | None = None
        self._starting: threading.Thread | None = None
        if not log.isEnabledFor(logging.DEBUG):  # Dask's INFO chatter is for --verbose only
            for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core",
                         "distributed.worker", "distributed.http.proxy"):
                logging.getLogger(name).setLevel(logging.WARNING)
        if scheduler:
            self._connect(scheduler)  # a wrong address or an empty cluster is said at once
        else:
            self._starting = threading.Thread(target=self._start_local, name="dask-local-cluster", daemon=True)
            self._starting.start()

    def _connect(self, scheduler: str) -> None:
        from distributed import Client  # batch.check_executor said how to install it if missing

        try:
            self.client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise PipelineError(f"cannot reach the Dask scheduler {scheduler}: {exc}",
                                hint="start it with `dask scheduler` and check the address and port") from exc
        try:
            self.client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError:
            self.client.close()
            raise PipelineError(f"the Dask scheduler {scheduler} has no worker",
                                hint=f"start workers with `dask worker {scheduler}`") from None
        # the number of pages kept in flight follows the cluster's size: its threads, one page each
        found = self.client.scheduler_info().get("workers", {}).values()
        self.workers = max(1, sum(int(w.get("nthreads", 1)) for w in found) or self.workers)
        self._setup_future = self.client.scatter(self._setup, broadcast=True)

    def _start_local(self) -> None:
        try:
            from distributed import Client, LocalCluster

            _fast_worker_start()
            # loopback only, no dashboard: nothing listens beyond this machine
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                                        scheduler_kwargs={"dashboard": False})
            self.client = Client(self.cluster)
            self.client.wait_for_workers(self.workers, timeout=120)  # a late worker would get no first page
            self._setup_future = self.client.scatter(self._setup, broadcast=True)
        except Exception as exc:
            log.debug("the local Dask cluster did not start", exc_info=True)
            self._failure = PipelineError(f"cannot start a local Dask cluster: {exc}",
                                          hint="run with --executor local, or with --verbose to see why")
        with self._lock:  # the pages that waited go first, in their order
            for page, local in self._waiting:
                self._send(page, local)
            self._waiting, self._starting = [], None

    def submit(self, page: PageImage) -> Future[PageResult]:
        local: Future[PageResult] = Future()
        with self._lock:
            if self._starting is not None:
                self._waiting.append((page, local))
                return local
        self._send(page, local)
        return local

    def _send(self, page: PageImage, local: Future[PageResult]) -> None:
        if self._failure is not None:
            local.set_exception(self._failure)  # raised where the batch waits for the page: it stops
            return
        packed = PackedPage.pack(page, compress=self.wants_encoded)
        remote = self.client.submit(_dask_task, packed, self._token, self._setup_future, pure=False)

        def done(fut: Any) -> None:
            try:
                local.set_result(fut.result())
            except Exception as exc:  # KilledWorker (the page killed 3 workers), a lost scheduler...
                local.set_result(cluster_failure(page.ref, exc))

        remote.add_done_callback(done)
        local.remote = remote  # type: ignore[attr-defined]  # keeps the Dask future alive until consumed

    def restart(self) -> None:
        pass  # Dask replaces lost workers and reschedules their tasks itself

    def close(self, cancel: bool = False) -> None:
        starting = self._starting
        if starting is not None:
            starting.join()
        try:
            if self.client is not None:
                self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()
