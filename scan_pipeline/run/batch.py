"""The batch: files to pages, pages to workers, results to the ledger in the order of the inputs.

The parent alone reads the input files and writes the ledger; workers only run
`pipeline.process_page`, each with its own costly context (Tesseract, models) built once. Pages are
loaded as the workers need them, with a bounded number in flight, so memory does not grow with
the batch. Results are written in input order whatever order the workers finish in, so N workers
write the same ledger as one. The ledger is written every few seconds, whole pages only and
atomically; an interrupted run restarted with the same command skips the pages already written.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from scan_pipeline.core import faults
from scan_pipeline.core.config import Config, load_config
from scan_pipeline.core.errors import InputFileError, NoInputError, OutputError, PipelineError
from scan_pipeline.core.records import (
    BatchReport,
    Failure,
    PageImage,
    PageRef,
    PageResult,
    PageSummary,
    Progress,
    ProgressEvent,
)
from scan_pipeline.core.template import Template, load_template
from scan_pipeline.ledger.append import append_results
from scan_pipeline.ledger.erase import erased_pairs
from scan_pipeline.ledger.outputs import output_record
from scan_pipeline.ledger.rows import utc_timestamp
from scan_pipeline.ledger.sidecars import read_page_records
from scan_pipeline.ledger.store import read_ledger, run_lock
from scan_pipeline.page.load import InputFile, count_pages, expand_inputs, read_pages
from scan_pipeline.report.html import thumbnail
from scan_pipeline.run.pool import ExecutorName, PageExecutor, make_executor
from scan_pipeline.run.process import WorkerContext
from scan_pipeline.run.worker import WorkerSetup, crashed_page

log = logging.getLogger(__name__)

FLUSH_LOCK_SECONDS = 600.0  # a flush waits this long for a review import or an erasure to finish


# --- the parent side ----------------------------------------------------------------------------

@dataclass
class _Slot:
    """One item of the ordered stream: a page being processed, or a file/page that failed to load."""

    where: str
    ref: PageRef | None = None
    page: PageImage | None = None  # kept until its result is consumed: a crashed worker's page is resent
    future: Future[PageResult] | None = None
    failure: Failure | None = None
    load_seconds: float = 0.0
    source_size: tuple[int, int] = (0, 0)


class _Writer:
    """Collects finished pages in input order and writes them to the ledger every few seconds."""

    def __init__(self, ledger: Path, report: BatchReport, reprocess: bool, config: Config,
                 flush_seconds: float, keep_overlays: bool, debug_dir: Path | None):
        self.ledger, self.report, self.reprocess, self.config = ledger, report, reprocess, config
        self.flush_seconds, self.keep_overlays, self.debug_dir = flush_seconds, keep_overlays, debug_dir
        self.results: list[PageResult] = []
        self.records: list[dict[str, Any]] = []
        self.outputs: list[dict[str, Any]] = []  # overlays written since the last flush, for L.outputs.jsonl
        self.erased_pages = {sha for sha, _ in erased_pairs(ledger)}
        self.last_flush = time.monotonic()
        self.flush_cost = 0.0

    def failed(self, failure: Failure) -> None:
        self.report.failures.append(failure)
        if failure.page is not None:
            self.report.pages.append(PageSummary(failure.file, failure.page, "failed", reason=failure.reason))

    def page(self, slot: _Slot, result: PageResult) -> None:
        assert slot.ref is not None
        page_failed = [i for i in result.issues if i.code.startswith("page_")]
        status: Literal["done", "failed"] = "failed" if page_failed else "done"
        for issue in page_failed:
            self.report.failures.append(Failure(slot.ref.source_file, slot.ref.page, issue.message, issue.hint))
        if self.debug_dir and result.overlay_png:
            if slot.ref.page_sha256 in self.erased_pages:  # the page shows a signature erased for good
                log.warning("%s: no overlay written: the page holds a signature erased from the ledger", slot.where)
            else:
                name = f"{Path(slot.ref.source_file).stem}-p{slot.ref.page}-{slot.ref.page_sha256[:8]}.png"
                _write_output(self.debug_dir / name, result.overlay_png)
                self.outputs.append(output_record("overlay", self.debug_dir / name, pages=[slot.ref.page_sha256]))
        written = [r for r in result.rows if not r.is_blank]
        flagged = sum(1 for r in written if r.flags)
        shown = self.keep_overlays and slot.ref.page_sha256 not in self.erased_pages
        self.report.pages.append(PageSummary(
            slot.ref.source_file, slot.ref.page, status, len(written), flagged,
            "; ".join(i.message for i in page_failed), thumbnail(result.overlay_png) if shown else b"",
            slot.ref.page_sha256))
        self.records.append({**page_record(result, status),
                             "load_seconds": round(slot.load_seconds, 3), "source_size": list(slot.source_size)})
        if not result.failed:  # a page with an issue but numbered rows keeps them: no signature is dropped
            self.report.pages_done += 1
            self.report.rows_read += len(written)
            self.report.flagged += flagged
            self.report.page_hashes.append(slot.ref.page_sha256)
            # the ledger needs no overlay; drop it so buffered pages stay small
            self.results.append(_without_overlay(result))

    def due(self) -> bool:
        waited = time.monotonic() - self.last_flush
        # a big ledger takes seconds to rewrite: never spend more than ~1/10 of the run doing it
        return bool(self.results or self.records) and waited >= max(self.flush_seconds, 10 * self.flush_cost)

    def flush(self) -> None:
        start = time.monotonic()
        if self.results or self.records or self.outputs:
            # one change: a page is marked done exactly when its rows are in (see pages_already_done);
            # review import and erase may come between two flushes, so the wait is long
            summary = append_results(self.ledger, self.results, reprocess=self.reprocess,
                                     dedup_config=self.config.dedup, page_records=self.records,
                                     outputs=self.outputs, lock_timeout=FLUSH_LOCK_SECONDS)
            self.report.rows_added += summary.rows_added
            self.report.duplicates += summary.duplicates_marked
            known = {r.page_sha256 for r in self.report.retakes}
            self.report.retakes += [r for r in summary.retakes if r.page_sha256 not in known]
            self.report.decisions_kept += summary.decisions_kept
            self.report.decisions_differ += summary.decisions_differ
            self.report.decisions_unmatched += summary.decisions_unmatched
        self.results, self.records, self.outputs = [], [], []
        self.last_flush = time.monotonic()
        self.flush_cost = self.last_flush - start


def _without_overlay(result: PageResult) -> PageResult:
    from dataclasses import replace

    return replace(result, overlay_png=b"") if result.overlay_png else result


def _write_output(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}",
                          hint="check that the folder is writable and the disk not full") from exc


def page_record(result: PageResult, status: str) -> dict[str, Any]:
    """What the run keeps about a page: where it is, how its geometry went, what went wrong."""
    q = result.quality
    return {
        "page_sha256": result.ref.page_sha256, "source_file": result.ref.source_file, "page": result.ref.page,
        "status": status, "processed_at": utc_timestamp(), "sheet_page": result.sheet_page,
        "rotation": q.rotation, "skew_deg": q.skew_deg, "lines_found": list(q.lines_found),
        "rows_found": q.rows_found, "rows_expected": q.rows_expected,
        "geometry_seconds": q.geometry_seconds, "geometry_cpu_seconds": q.geometry_cpu_seconds, "seconds": q.seconds,
        "issues": [{"code": i.code, "message": i.message} for i in result.issues],
    }


def pages_already_done(ledger: Path) -> set[str]:
    """Pages a restarted run skips: those with rows in the ledger, and those recorded done without
    rows (a sheet page left blank). Failed pages are tried again."""
    done = set(read_ledger(ledger)["page_sha256"])
    done.update(r["page_sha256"] for r in read_page_records(ledger)
                if r.get("status") == "done" and r.get("page_sha256"))
    return done


def _stream(files: list[InputFile], known: set[str], report: BatchReport,
            keep_encoded: bool = False) -> Iterator[_Slot]:
    """Every page of every file, in order, loaded lazily; load failures come as slots too. A page that
    cannot be loaded is reported and the file's next pages are still read."""
    for item in files:
        pages = read_pages(item, keep_encoded=keep_encoded)
        while True:
            start = time.perf_counter()
            try:
                page = next(pages, None)
            except InputFileError as exc:  # the file itself: none of its pages can be read
                yield _Slot(exc.where or item.given_as, failure=Failure(item.given_as, exc.page, exc.message,
                                                                        exc.hint))
                break
            except PipelineError:
                raise  # not about this file (a missing program): the batch cannot go on
            except Exception as exc:  # a reader library's own failure: this file only
                log.debug("%s: cannot read", item.given_as, exc_info=True)
                yield _Slot(item.given_as, failure=Failure(item.given_as, None, f"cannot read the file ({exc!r})",
                                                           "open it in a viewer; scan the sheet again"))
                break
            if page is None:
                break
            if isinstance(page, InputFileError):  # one page: reported, the next one is read
                yield _Slot(page.where or item.given_as, failure=Failure(item.given_as, page.page, page.message,
                                                                         page.hint))
                continue
            where = f"{item.given_as}:{page.ref.page}"
            if page.ref.page_sha256 in known:
                report.pages_skipped += 1
                continue
            yield _Slot(where, ref=page.ref, page=page, load_seconds=time.perf_counter() - start,
                        source_size=(int(page.pixels.shape[1]), int(page.pixels.shape[0])))


def run_batch(inputs: list[str], ledger: Path, *, template: Template | None = None, config: Config | None = None,
              debug_dir: Path | None = None, reprocess: bool = False, progress: Progress | None = None,
              context: WorkerContext | None = None, workers: int = 1, executor: ExecutorName = "local",
              scheduler: str | None = None, keep_overlays: bool = False,
              log_level: int | None = None, wait: bool = False) -> BatchReport:
    """Process every page of the inputs into the ledger. Raises only when nothing at all can be read.

    The ledger's run lock is held throughout: a second run on it is refused (LedgerLockedError),
    or with `wait` waits for this one. On Ctrl-C (KeyboardInterrupt) the pages finished so far are
    written, `report.interrupted` is set, and KeyboardInterrupt is raised again with the report as
    its argument.
    """
    start = time.perf_counter()
    template = template or load_template()
    config = config or load_config()
    report = BatchReport(workers=max(1, workers), executor=executor)
    files, problems = expand_inputs(inputs)
    report.failures.extend(Failure(p.where, None, p.reason, p.hint) for p in problems)
    report.files = len(files)
    if not files:
        said = "; ".join(f"{p.where}: {p.reason}" for p in problems[:5])
        raise NoInputError("no input file to process" + (f" ({said})" if said else ""),
                           hint="give scans (PDF, TIFF, JPEG, PNG, HEIC) or folders that hold them")
    with run_lock(ledger, "scan-pipeline process", wait=wait):
        return _run(files, ledger, report, start, template, config, debug_dir, reprocess, progress, context,
                    executor, scheduler, keep_overlays, log_level)


def _run(files: list[InputFile], ledger: Path, report: BatchReport, start: float, template: Template,
         config: Config, debug_dir: Path | None, reprocess: bool, progress: Progress | None,
         context: WorkerContext | None, executor: ExecutorName, scheduler: str | None, keep_overlays: bool,
         log_level: int | None) -> BatchReport:
    if debug_dir:
        try:
            debug_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {debug_dir}: {exc.strerror or exc}") from exc
    setup = WorkerSetup(template, config, overlay=bool(debug_dir) or keep_overlays,
                        log_level=logging.getLogger().getEffectiveLevel() if log_level is None else log_level)
    # first, so that workers (or a local Dask cluster) start while the pages are counted
    pool = make_executor(executor, report.workers, setup, scheduler, context)
    report.workers = pool.workers  # a remote cluster has its own size
    writer: _Writer | None = None
    try:
        known = set() if reprocess else pages_already_done(ledger)
        report.pages_total = sum(count_pages(f) for f in files)
        writer = _Writer(ledger, report, reprocess, config, config.batch.flush_seconds, keep_overlays, debug_dir)
        _drive(pool, _stream(files, known, report, pool.wants_encoded), writer, progress,
               in_flight=max(2, int(config.batch.pages_in_flight_per_worker * pool.workers)))
    except KeyboardInterrupt:
        report.interrupted = True
        pool.close(cancel=True)
        if writer is not None:
            writer.flush()
        report.seconds = time.perf_counter() - start
        raise KeyboardInterrupt(report) from None
    except BaseException:
        pool.close(cancel=True)
        raise
    pool.close()
    writer.flush()
    if report.pages_done == 0 and report.pages_skipped == 0:
        reasons = "; ".join(str(f) for f in report.failures[:5])
        raise NoInputError(f"no readable page in the input ({reasons})",
                           hint="check the files listed; scan the sheets again if they are damaged")
    report.seconds = time.perf_counter() - start
    return report


def _drive(pool: PageExecutor, stream: Iterator[_Slot], writer: _Writer, progress: Progress | None,
           in_flight: int) -> None:
    """Keep up to `in_flight` pages submitted; consume results in input order."""
    window: deque[_Slot] = deque()
    try:
        _fill_and_consume(pool, stream, writer, progress, in_flight, window)
    except KeyboardInterrupt:
        # keep what is already finished at the head of the queue: it is written before stopping
        while window and window[0].future is not None and window[0].future.done():
            head = window.popleft()
            assert head.future is not None  # tested on window[0], this slot, just above
            try:
                writer.page(head, head.future.result())
            except Exception:
                break
        raise


def _fill_and_consume(pool: PageExecutor, stream: Iterator[_Slot], writer: _Writer, progress: Progress | None,
                      in_flight: int, window: deque[_Slot]) -> None:
    exhausted = False
    while True:
        while not exhausted and sum(1 for s in window if s.future is not None) < in_flight:
            slot = next(stream, None)
            if slot is None:
                exhausted = True
                break
            if slot.page is not None:
                slot.future = pool.submit(slot.page)
            window.append(slot)
        if not window:
            return
        head = window[0]
        if head.future is not None:
            try:
                result = head.future.result()
            except BrokenProcessPool:
                _recover(pool, window, writer)
                continue
            writer.page(head, result)
        else:
            assert head.failure is not None
            writer.failed(head.failure)
        window.popleft()
        head.page = None
        if writer.due():
            writer.flush()
            faults.point("batch_flushed")
        if progress:
            progress(ProgressEvent(head.where, writer.report))
        faults.point("batch_page_done")


def _recover(pool: PageExecutor, window: deque[_Slot], writer: _Writer) -> None:
    """A worker died (a crash in an engine, out of memory): find the page that did it, go on.

    The pages in flight are resent one at a time on fresh workers; the one that kills its worker
    again is reported as failed, the others go on as normal.
    """
    log.warning("a worker stopped unexpectedly; retrying its pages one at a time")
    pool.restart()
    for slot in list(window):
        if slot.page is None:
            continue
        if slot.future is not None and slot.future.done() and not isinstance(slot.future.exception(),
                                                                             BrokenProcessPool):
            continue  # finished before the crash
        try:
            slot.future = pool.submit(slot.page)
            slot.future.result()
        except BrokenProcessPool:
            pool.restart()
            failed: Future[PageResult] = Future()
            failed.set_result(crashed_page(slot.page.ref,
                                           "stopped its worker process twice (a crash or out of memory)"))
            slot.future = failed


