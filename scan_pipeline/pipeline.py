"""The path of a page, and of a batch.

`process_page` is one pure function of a page: everything it needs comes in (the page and a
`WorkerContext`), everything it found goes out (a `PageResult`); it writes nothing and prints
nothing. `run_batch` is the parent: it expands inputs, skips pages already in the ledger, calls
`process_page`, appends to the ledger file by file and collects every failure with its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .cells import cut_row, row_ink
from .config import Config, load_config
from .engines import OcrEngine, RapidRecEngine, rapid_engine, tesseract_engine
from .errors import InputFileError, NoInputError, OutputError, PipelineError
from .grid import find_grid, page_masks, square_up
from .ledger import append_page_records, append_results, read_ledger, utc_timestamp
from .load import InputFile, expand_inputs, iter_pages
from .names import read_name
from .normalise import normalise_page, turn_upside_down
from .postal import PostalList, load_postal_list, read_postal
from .records import (
    Box,
    FlatPage,
    GridRow,
    PageGrid,
    PageImage,
    PageIssue,
    PageQuality,
    PageResult,
    RowCells,
    RowReading,
)
from .signature import signature_state
from .template import Template, load_template

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    """What is costly to build: built once per worker, then used for every page."""

    template: Template
    config: Config
    engine: OcrEngine
    postal_list: PostalList
    debug: bool = False
    name_engine: RapidRecEngine | None = None  # the second name reader; None: Tesseract alone, never accepted

    @classmethod
    def build(cls, template: Template | None = None, config: Config | None = None,
              debug: bool = False) -> WorkerContext:
        second = rapid_engine()
        if second is None:
            log.warning("the second name reader (rapidocr-onnxruntime) is not installed: names are read by "
                        "Tesseract alone and always sent to review; `make install` installs it")
        return cls(template or load_template(), config or load_config(), tesseract_engine(),
                   load_postal_list(), debug, second)


def _png(gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", gray, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    return buf.tobytes() if ok else b""


def _to_source(box: Box, inverse: np.ndarray) -> Box:
    corners = np.array([[[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]]], np.float64)
    pts = cv2.perspectiveTransform(corners, inverse)[0]
    return Box(int(round(pts[:, 0].min())), int(round(pts[:, 1].min())),
               int(round(pts[:, 0].max())), int(round(pts[:, 1].max())))


def read_row(row: GridRow, cells: RowCells, ctx: WorkerContext, inverse: np.ndarray) -> RowReading:
    """Recognise one row: name, postal code, signature state, and the flags a person should see."""
    cfg = ctx.config
    ink = dict(cells.ink)
    has = {k: v >= cfg.cells.empty_ink for k, v in ink.items()}
    name, name_flags = read_name(cells.crop("name"), has["name"], ctx.engine, cfg.names, ctx.name_engine,
                                 cell_margin=cfg.cells.margin)
    postal = read_postal(cells.crop("postal_code"), has["postal_code"], ctx.engine, ctx.postal_list, cfg.postal)
    # the row's ink from its cut cells: a strike through the row is kept whole, unlike with the
    # page's line mask, which takes a long straight stroke for a ruled line
    state = signature_state(ink["signature"], row_ink(cells), cfg.signature)
    flags = [*name_flags, *postal.flags]
    if state == "struck":
        flags.append("signature_struck")
    elif state == "empty" and (has["name"] or has["postal_code"]):
        flags.append("signature_missing")
    if state != "empty" and not has["name"]:
        flags.append("name_missing")
    if has["name"] and not has["postal_code"]:
        flags.append("postal_missing")
    crops = tuple((k, _png(c)) for k, c in cells.crops) if any(has.values()) else ()
    return RowReading(
        row_number=int(row.number or 0), name=name, postal=postal.to_field(), postal_valid=postal.valid,
        commune=postal.commune, signature=state, flags=tuple(dict.fromkeys(flags)), crops_png=crops,
        boxes=tuple((k, _to_source(b, inverse)) for k, b in row.cells),
    )


def overlay(flat: FlatPage, grid: PageGrid | None) -> bytes:
    """The flat page with the grid, cell boxes and row numbers drawn: why a page went wrong, at a glance."""
    img = cv2.cvtColor(flat.pixels, cv2.COLOR_GRAY2BGR)
    if grid:
        for block in grid.blocks:
            b = block.box
            cv2.rectangle(img, (b.x0, b.y0), (b.x1, b.y1), (255, 0, 0), 3)
            for row in block.rows:
                for _, c in row.cells:
                    cv2.rectangle(img, (c.x0 + 2, c.y0 + 2), (c.x1 - 2, c.y1 - 2), (0, 160, 0), 1)
                n = row.cell("row_number")
                color = (0, 0, 255) if row.number_confidence < 1 else (0, 128, 255)
                cv2.putText(img, f"{row.number}", (n.x1 + 4, n.y1 - 6), cv2.FONT_HERSHEY_SIMPLEX,
                            max(0.5, n.height / 60), color, 2)
    scale = min(1.0, 1400 / img.shape[0])
    img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes() if ok else b""


def process_page(page: PageImage, ctx: WorkerContext) -> PageResult:
    """Everything the pipeline finds on one page. Never raises for a bad page: it reports it."""
    start = time.perf_counter()
    aspect = ctx.template.paper_mm[1] / ctx.template.paper_mm[0]
    flat = normalise_page(page, aspect)
    masks = page_masks(flat.pixels)
    squared = square_up(flat, masks) if flat.photo else None  # a scan's grid is square once deskewed
    if squared is not None:
        flat, masks = squared, page_masks(squared.pixels)
    search = find_grid(flat, ctx.template, ctx.engine, masks)
    if search.upside_down:
        flat = turn_upside_down(flat)
        masks = page_masks(flat.pixels)
        search = find_grid(flat, ctx.template, ctx.engine, masks)
    grid = search.grid
    issues = list(search.issues)
    numbered = [row for row in grid.rows if row.number is not None] if grid else []
    if grid and len(numbered) < len(grid.rows):
        issues.append(PageIssue("row_unnumbered", f"{len(grid.rows) - len(numbered)} row(s) could not be given "
                                "a printed number", "check the page with --debug-dir"))
    cut = [cut_row(flat.pixels, masks, row, ctx.config.cells) for row in numbered]
    geometry_seconds = time.perf_counter() - start
    inverse = np.linalg.inv(np.array(flat.transform))
    rows = [read_row(row, cells, ctx, inverse) for row, cells in zip(numbered, cut)]
    quality = PageQuality(
        rotation=flat.rotation, skew_deg=round(flat.skew_deg, 3),
        lines_found=grid.lines_found if grid else (0, 0), rows_found=len(rows),
        rows_expected=len(ctx.template.rows_on_page(grid.sheet_page)) if grid and grid.sheet_page else 0,
        geometry_seconds=round(geometry_seconds, 3), seconds=round(time.perf_counter() - start, 3))
    return PageResult(ref=page.ref, rows=tuple(rows), issues=tuple(issues), quality=quality,
                      sheet_page=grid.sheet_page if grid else None,
                      overlay_png=overlay(flat, grid) if ctx.debug else b"")


# --- the batch (parent process) ---------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    file: str
    page: int | None
    reason: str
    hint: str = ""

    def __str__(self) -> str:
        where = self.file if self.page is None else f"{self.file}:page {self.page}"
        return f"{where}: {self.reason}" + (f" ({self.hint})" if self.hint else "")


@dataclass
class BatchReport:
    files: int = 0
    pages_done: int = 0
    pages_skipped: int = 0
    rows_added: int = 0
    flagged: int = 0
    duplicates: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pages_failed(self) -> int:
        return len({(f.file, f.page) for f in self.failures})


Progress = Callable[[str, PageResult | None], None]


def run_batch(inputs: list[str], ledger: Path, *, template: Template | None = None, config: Config | None = None,
              debug_dir: Path | None = None, reprocess: bool = False, progress: Progress | None = None,
              context: WorkerContext | None = None) -> BatchReport:
    """Process every page of the inputs into the ledger. Raises only when nothing at all can be read."""
    start = time.perf_counter()
    report = BatchReport()
    files, missing = expand_inputs(inputs)
    report.failures.extend(Failure(m, None, "no such file or folder", "check the path") for m in missing)
    report.files = len(files)
    if not files:
        raise NoInputError("no input file to process" + (f" ({', '.join(missing)} not found)" if missing else ""),
                           hint="give scans (PDF, TIFF, JPEG, PNG) or folders that hold them")
    known = set() if reprocess else set(read_ledger(ledger)["page_sha256"])
    if debug_dir:
        try:
            debug_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {debug_dir}: {exc.strerror or exc}") from exc
    ctx = context or WorkerContext.build(template, config, debug=debug_dir is not None)
    for item in files:
        records: list[dict] = []
        results = _process_file(item, ctx, known, report, debug_dir, progress, records)
        if results:
            summary = append_results(ledger, results, reprocess=reprocess)
            report.rows_added += summary.rows_added
            report.duplicates += summary.duplicates_marked
        append_page_records(ledger, records)
    if report.pages_done == 0 and report.pages_skipped == 0:
        reasons = "; ".join(str(f) for f in report.failures[:5])
        raise NoInputError(f"no readable page in the input ({reasons})",
                           hint="check the files listed; scan the sheets again if they are damaged")
    report.seconds = time.perf_counter() - start
    return report


def page_record(result: PageResult, status: str) -> dict:
    """What the run keeps about a page: where it is, how its geometry went, what went wrong."""
    q = result.quality
    return {
        "page_sha256": result.ref.page_sha256, "source_file": result.ref.source_file, "page": result.ref.page,
        "status": status, "processed_at": utc_timestamp(), "sheet_page": result.sheet_page,
        "rotation": q.rotation, "skew_deg": q.skew_deg, "lines_found": list(q.lines_found),
        "rows_found": q.rows_found, "rows_expected": q.rows_expected,
        "geometry_seconds": q.geometry_seconds, "seconds": q.seconds,
        "issues": [{"code": i.code, "message": i.message} for i in result.issues],
    }


def _process_file(item: InputFile, ctx: WorkerContext, known: set[str], report: BatchReport,
                  debug_dir: Path | None, progress: Progress | None, records: list[dict]) -> list[PageResult]:
    results = []
    try:
        pages = iter_pages(item)
        while True:
            loading = time.perf_counter()
            page = next(pages, None)
            if page is None:
                break
            load_seconds = time.perf_counter() - loading
            if page.ref.page_sha256 in known:
                report.pages_skipped += 1
                if progress:
                    progress(f"{item.given_as}:{page.ref.page}", None)
                continue
            try:
                result = process_page(page, ctx)
            except PipelineError:
                raise
            except Exception as exc:  # one bad page never stops the batch
                report.failures.append(Failure(item.given_as, page.ref.page, f"internal error: {exc!r}",
                                               "please report it with the page"))
                continue
            if debug_dir and result.overlay_png:
                (debug_dir / f"{Path(item.given_as).stem}-p{page.ref.page}-{page.ref.page_sha256[:8]}.png"
                 ).write_bytes(result.overlay_png)
            page_failed = [i for i in result.issues if i.code.startswith("page_")]
            for issue in page_failed:
                report.failures.append(Failure(item.given_as, page.ref.page, issue.message, issue.hint))
            records.append({**page_record(result, "failed" if page_failed else "done"),
                            "load_seconds": round(load_seconds, 3),
                            "source_size": [int(page.pixels.shape[1]), int(page.pixels.shape[0])]})
            if not page_failed:
                report.pages_done += 1
                report.flagged += sum(1 for r in result.rows if r.flags and not r.is_blank)
                results.append(result)
            if progress:
                progress(f"{item.given_as}:{page.ref.page}", result)
    except InputFileError as exc:
        report.failures.append(Failure(item.given_as, exc.page, exc.message, exc.hint))
    return results
