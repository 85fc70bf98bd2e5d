"""Where pages run: the parent itself, a pool of local processes, or (cluster.py) Dask."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Literal, Protocol

from scan_pipeline.core.errors import MissingDependencyError, PipelineError
from scan_pipeline.core.logs import configure_logging
from scan_pipeline.core.records import PageImage, PageResult
from scan_pipeline.run.process import WorkerContext
from scan_pipeline.run.worker import WorkerSetup, build_context, run_page

ExecutorName = Literal["local", "dask"]

_WORKER_CTX: WorkerContext | None = None


def _exit_with_parent(parent_pid: int) -> None:
    """Stop this worker when the parent is gone (kill -9): a pool worker would otherwise wait forever."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user (pid reused): keep going
                pass

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_pool_worker(setup: WorkerSetup, parent_pid: int) -> None:
    global _WORKER_CTX
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    _exit_with_parent(parent_pid)
    configure_logging(setup.log_level)
    _WORKER_CTX = build_context(setup)


def _pool_task(page: PageImage) -> PageResult:
    assert _WORKER_CTX is not None, "worker context not built"
    return run_page(page, _WORKER_CTX)


class PageExecutor(Protocol):
    """Runs `run_page` somewhere; futures come back in any order."""

    workers: int
    wants_encoded: bool  # send a JPEG or PNG page as its file's bytes (a network: they are smaller)

    def submit(self, page: PageImage) -> Future[PageResult]: ...

    def restart(self) -> None: ...  # after a worker died: a fresh set of workers

    def close(self, cancel: bool = False) -> None: ...


class InlineExecutor:
    """One worker: the parent itself (no process start-up, easiest to debug)."""

    workers = 1
    wants_encoded = False

    def __init__(self, setup: WorkerSetup, context: WorkerContext | None = None):
        self.ctx = context or build_context(setup)

    def submit(self, page: PageImage) -> Future[PageResult]:
        future: Future[PageResult] = Future()
        future.set_result(run_page(page, self.ctx))
        return future

    def restart(self) -> None:
        pass

    def close(self, cancel: bool = False) -> None:
        pass


class PoolExecutor:
    """N worker processes on this machine, each with its own context."""

    wants_encoded = False  # the pixels are already decoded: sending them costs only a copy

    def __init__(self, setup: WorkerSetup, workers: int):
        self.setup = setup
        self.workers = workers
        self.pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        import multiprocessing

        # forkserver: workers start from a clean process (no parent threads such as the progress
        # bar's), with the heavy imports done once in the server
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["scan_pipeline.run.pool"])
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_pool_worker,
                                   initargs=(self.setup, os.getpid()))

    def submit(self, page: PageImage) -> Future[PageResult]:
        return self.pool.submit(_pool_task, page)

    def restart(self) -> None:
        self.close(cancel=True)
        self.pool = self._start()

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for proc in list((self.pool._processes or {}).values()):  # no public way to stop busy workers
                if proc.is_alive():
                    proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=cancel)


def make_executor(name: ExecutorName, workers: int, setup: WorkerSetup, scheduler: str | None = None,
                  context: WorkerContext | None = None) -> PageExecutor:
    if check_executor(name, scheduler) == "dask":
        from scan_pipeline.run.cluster import DaskExecutor

        return DaskExecutor(setup, workers, scheduler)
    if workers <= 1:
        return InlineExecutor(setup, context)
    return PoolExecutor(setup, workers)


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_executor(name: str, scheduler: str | None = None) -> ExecutorName:
    """The executor asked for, once it is known to be usable (before any input is read)."""
    if name not in ("local", "dask"):
        raise PipelineError(f"unknown executor {name!r}", hint="use --executor local or --executor dask")
    if scheduler and name != "dask":
        raise PipelineError("--scheduler needs --executor dask", hint="add --executor dask, or drop --scheduler")
    if name == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "--executor dask needs the dask extra, which is not installed",
                hint="pip install 'scan-pipeline[dask]' (or run `make install`)") from None
    return name  # type: ignore[return-value]
