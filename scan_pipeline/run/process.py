"""The path of a page.

`process_page` is one pure function of a page: everything it needs comes in (the page and a
`WorkerContext`), everything it found goes out (a `PageResult`); it writes nothing and prints
nothing, so it runs the same in the parent, in a worker process or on a cluster (`batch.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import cv2
import numpy as np

from scan_pipeline.core.config import Config, load_config
from scan_pipeline.core.logs import row_context
from scan_pipeline.core.ocr import OcrEngine
from scan_pipeline.core.postcodes import PostalList, load_postal_list
from scan_pipeline.core.records import (
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
from scan_pipeline.core.template import Template, load_template
from scan_pipeline.page.cells import cut_row, holds_writing, row_ink
from scan_pipeline.page.dewarp import to_unbent, unbend
from scan_pipeline.page.frame import find_grid_frame, frame_page
from scan_pipeline.page.grid import GridSearch, PageMasks, find_grid, page_masks, square_up
from scan_pipeline.page.load import as_gray
from scan_pipeline.page.normalise import normalise_page, on_a_table, turn_upside_down
from scan_pipeline.page.quality import photo_issue
from scan_pipeline.read.engines import RapidRecEngine, rapid_engine, tesseract_engine
from scan_pipeline.read.names import read_name
from scan_pipeline.read.postal import read_postal
from scan_pipeline.read.signature import signature_state

log = logging.getLogger(__name__)

MIN_SIDE = 300  # pixels: a page smaller than this (A4 at ~35 dpi) cannot hold readable handwriting


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


# run-length zlib: on cells (white paper, dark strokes) as small as the default level, 3.5x faster;
# and no row filter (where OpenCV lets one choose): 1 % larger, half the time again
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE,
               *([cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE] if hasattr(cv2, "IMWRITE_PNG_FILTER") else [])]


def _png(gray: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", gray, _PNG_PARAMS)
    return buf.tobytes() if ok else b""


def _to_source(box: Box, inverse: np.ndarray, bend: tuple[float, ...] = ()) -> Box:
    if bend:  # along the edges too: a straightened row was a curve on the photo
        corners = to_unbent(box.outline(), bend)[None]
    else:
        corners = np.array([[[box.x0, box.y0], [box.x1, box.y0], [box.x1, box.y1], [box.x0, box.y1]]], np.float64)
    pts = cv2.perspectiveTransform(corners, inverse)[0]
    return Box(int(round(pts[:, 0].min())), int(round(pts[:, 1].min())),
               int(round(pts[:, 0].max())), int(round(pts[:, 1].max())))


def read_row(row: GridRow, cells: RowCells, ctx: WorkerContext, inverse: np.ndarray,
             bend: tuple[float, ...] = ()) -> RowReading:
    """Recognise one row: name, postal code, signature state, and the flags a person should see."""
    cfg = ctx.config
    # what holds writing (a name, a code, a signature, a ditto mark, a strike, in any pen), not specks,
    # ruled-line fragments, shadows, folds or a stray pen touch: a row without any is no signature row
    writing = {k: holds_writing(cells, k, cfg.cells) for k, _ in cells.crops}
    has = {k: w.written for k, w in writing.items()}
    name, name_flags = read_name(cells.crop("name"), has["name"], ctx.engine, cfg.names, ctx.name_engine,
                                 cell_margin=cfg.cells.margin)
    postal = read_postal(cells.crop("postal_code"), has["postal_code"], ctx.engine, ctx.postal_list, cfg.postal)
    # the row's ink from its cut cells: a strike through the row is kept whole, unlike with the
    # page's line mask, which takes a long straight stroke for a ruled line
    state = signature_state(writing["signature"].share, row_ink(cells), cfg.signature) if any(has.values()) \
        else "empty"
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
        boxes=tuple((k, _to_source(b, inverse, bend)) for k, b in row.cells),
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


def _straightened(flat: FlatPage, masks: PageMasks) -> tuple[FlatPage, PageMasks]:
    """A photo's bowed rows straightened (a scan lies flat: its rows are left as they are)."""
    bent = unbend(flat, masks.horizontal) if flat.photo else None
    return (bent, page_masks(bent.pixels)) if bent is not None else (flat, masks)


def _search(flat: FlatPage, masks: PageMasks, ctx: WorkerContext) -> tuple[FlatPage, PageMasks, GridSearch]:
    """The grid of a flat page, its rows straightened first, turned if it is upside down."""
    straight = flat  # before its rows are straightened: what is turned if it is upside down
    flat, masks = _straightened(flat, masks)
    search = find_grid(flat, ctx.template, ctx.engine, masks)
    if search.upside_down:
        turned = turn_upside_down(straight)
        flat, masks = _straightened(turned, page_masks(turned.pixels))
        search = find_grid(flat, ctx.template, ctx.engine, masks)
    return flat, masks, search


def _numbered(search: GridSearch) -> int:
    return sum(1 for r in search.grid.rows if r.number is not None) if search.grid else 0


def _short(search: GridSearch, template: Template) -> bool:
    """No grid, or fewer numbered rows than its page prints."""
    grid = search.grid
    if grid is None or grid.sheet_page is None:
        return True
    return _numbered(search) < len(template.rows_on_page(grid.sheet_page))


def _framed(page: PageImage, template: Template) -> FlatPage | None:
    frame = find_grid_frame(as_gray(page.pixels))
    return None if frame is None else frame_page(page, frame, template.paper_mm, template.margin_mm)


def process_page(page: PageImage, ctx: WorkerContext) -> PageResult:
    """Everything the pipeline finds on one page. Never raises for a bad page: it reports it."""
    start, cpu_start = time.perf_counter(), time.process_time()
    height, width = page.pixels.shape[:2]
    if min(height, width) < MIN_SIDE:
        return PageResult(ref=page.ref, issues=(PageIssue(
            "page_too_small", f"the page is too small to read ({width} x {height} pixels)",
            "scan the sheet at 200 to 300 dpi"),))
    aspect = ctx.template.paper_mm[1] / ctx.template.paper_mm[0]
    flat = normalise_page(page, aspect)
    masks = page_masks(flat.pixels)
    squared = square_up(flat, masks) if flat.photo else None  # a scan's grid is square once deskewed
    tries = [(squared, page_masks(squared.pixels))] if squared is not None else []
    # the page as its outline gave it, after the squared page: a frame traced wrong (a crease along
    # it) squares the grid askew, while a wrong outline (another sheet beside it) needs squaring
    for candidate, candidate_masks in [*tries, (flat, masks)]:
        flat, masks, search = _search(candidate, candidate_masks, ctx)
        if search.grid is not None:
            break
    if _short(search, ctx.template) and not search.upside_down and on_a_table(as_gray(page.pixels)):
        # the outline misled (another sheet beside it, a corner in shadow, the sheet at the photo's
        # edge): the grid's own printed frame straightens the photo instead
        framed = _framed(page, ctx.template)
        if framed is not None:
            tried = _search(framed, page_masks(framed.pixels), ctx)
            if tried[2].grid is not None and (search.grid is None or _numbered(tried[2]) > _numbered(search)):
                flat, masks, search = tried
    grid = search.grid
    issues = list(search.issues)
    if grid is None and not search.upside_down:
        unusable = photo_issue(page, flat, ctx.template.paper_mm[1])
        if unusable is not None:
            issues.insert(0, unusable)
    numbered = [row for row in grid.rows if row.number is not None] if grid else []
    if grid and len(numbered) < len(grid.rows):
        issues.append(PageIssue("row_unnumbered", f"{len(grid.rows) - len(numbered)} row(s) could not be given "
                                "a printed number", "check the page with --debug-dir"))
    cut = [cut_row(flat.pixels, masks, row, ctx.config.cells, flat.photo) for row in numbered]
    geometry_seconds, geometry_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    inverse = np.linalg.inv(np.array(flat.transform))
    rows = []
    for row, cells in zip(numbered, cut):
        with row_context(int(row.number or 0)):
            rows.append(read_row(row, cells, ctx, inverse, flat.bend))
            log.debug("name %r (%s), postal code %r (%s), signature %s", rows[-1].name.value, rows[-1].name.band,
                      rows[-1].postal.value, rows[-1].postal.band, rows[-1].signature)
    quality = PageQuality(
        rotation=flat.rotation, skew_deg=round(flat.skew_deg, 3),
        lines_found=grid.lines_found if grid else (0, 0), rows_found=len(rows),
        rows_expected=len(ctx.template.rows_on_page(grid.sheet_page)) if grid and grid.sheet_page else 0,
        geometry_seconds=round(geometry_seconds, 3), geometry_cpu_seconds=round(geometry_cpu, 3),
        seconds=round(time.perf_counter() - start, 3))
    return PageResult(ref=page.ref, rows=tuple(rows), issues=tuple(issues), quality=quality,
                      sheet_page=grid.sheet_page if grid else None,
                      overlay_png=overlay(flat, grid) if ctx.debug else b"")
