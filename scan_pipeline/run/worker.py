"""The worker side of a batch: what a worker builds once, and one page run without ever raising."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from scan_pipeline.core.config import Config
from scan_pipeline.core.logs import page_context
from scan_pipeline.core.records import PageImage, PageIssue, PageRef, PageResult
from scan_pipeline.core.template import Template
from scan_pipeline.run.process import WorkerContext, process_page

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker needs to build its context: small and picklable."""

    template: Template
    config: Config
    overlay: bool = False  # draw the grid overlay of each page (debug dir, report)
    log_level: int = logging.WARNING


def limit_threads() -> None:
    """One thread per worker in every engine: the workers are the parallelism."""
    for var in ("OMP_THREAD_LIMIT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    import cv2

    cv2.setNumThreads(1)


def build_context(setup: WorkerSetup) -> WorkerContext:
    limit_threads()
    return WorkerContext.build(setup.template, setup.config, debug=setup.overlay)


def crashed_page(ref: PageRef, reason: str) -> PageResult:
    """The result of a page whose reading killed the process reading it."""
    return PageResult(ref=ref, issues=(PageIssue(
        "page_crashed", f"reading this page {reason}",
        "scan the page again at 300 dpi; if it happens again, please report it with the page"),))


def run_page(page: PageImage, ctx: WorkerContext) -> PageResult:
    """`process_page`, with any unexpected error turned into a failed page (the batch goes on)."""
    with page_context(f"{page.ref.source_file}:{page.ref.page}"):
        try:
            return process_page(page, ctx)
        except Exception as exc:
            log.debug("internal error", exc_info=True)
            return PageResult(ref=page.ref, issues=(PageIssue(
                "page_internal_error", f"internal error: {exc!r}", "please report it with the page"),))


