"""The small typed records that the stages pass to each other.

A page travels: PageRef -> PageImage -> FlatPage -> PageGrid -> RowCells -> RowReading -> PageResult.
Every record is frozen and picklable, so a page can be processed in another process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from scan_pipeline.core.text import printable

Band = Literal["accept", "review", "reject"]
SignatureState = Literal["signed", "empty", "struck"]


@dataclass(frozen=True)
class PageRef:
    source_file: str  # the input path as given on the command line (or found in a folder)
    page: int  # 1-based page within that file
    page_sha256: str  # sha256 of the file's bytes joined with the page index


@dataclass(frozen=True)
class PageImage:
    ref: PageRef
    pixels: np.ndarray  # uint8, gray (H, W) as loaded; RGB (H, W, 3) is accepted too
    dpi: float
    # the file's own bytes when they are this one page and decode (load.decode_image) to exactly
    # these pixels: a JPEG or PNG as scanned, several times smaller than any re-encoding
    encoded: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class Box:
    """A rectangle in pixel coordinates, x1/y1 exclusive."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def iou(self, other: Box) -> float:
        ix = max(0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union else 0.0

    def outline(self, per_side: int = 5) -> np.ndarray:
        """(4 * per_side, 2) points along the edges, corners included: what a box becomes under a
        warp that bends lines (a bowed row) is the box around these points, mapped."""
        t = np.linspace(0.0, 1.0, per_side)
        xs, ys = self.x0 + self.width * t, self.y0 + self.height * t
        top, bottom = np.full(per_side, float(self.y0)), np.full(per_side, float(self.y1))
        left, right = np.full(per_side, float(self.x0)), np.full(per_side, float(self.x1))
        points: np.ndarray = np.concatenate([np.stack([xs, top], 1), np.stack([xs, bottom], 1),
                                             np.stack([left, ys], 1), np.stack([right, ys], 1)])
        return points


@dataclass(frozen=True)
class FlatPage:
    ref: PageRef
    pixels: np.ndarray  # uint8 gray, upright and deskewed
    dpi: float
    rotation: int  # quarter turns undone (0, 90, 180, 270 degrees clockwise)
    skew_deg: float  # small skew that was undone
    # 3x3 homography mapping source-image pixel coordinates to flat-page coordinates
    transform: tuple[tuple[float, ...], ...] = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    photo: bool = False  # the page outline was found and warped flat
    # a bowed sheet's rows straightened after `transform`: numpy.polyval coefficients of how far a
    # row line at x was moved up (page/dewarp.py); () when the rows were straight
    bend: tuple[float, ...] = ()


@dataclass(frozen=True)
class GridRow:
    number: int | None  # the printed row number after fitting to the template
    number_read: str  # what was read in the number cell
    number_confidence: float
    cells: tuple[tuple[str, Box], ...]  # (column name, box) in column order

    def cell(self, column: str) -> Box:
        return dict(self.cells)[column]

    @property
    def box(self) -> Box:
        boxes = [b for _, b in self.cells]
        return Box(min(b.x0 for b in boxes), min(b.y0 for b in boxes),
                   max(b.x1 for b in boxes), max(b.y1 for b in boxes))


@dataclass(frozen=True)
class GridBlock:
    box: Box
    rows: tuple[GridRow, ...]


@dataclass(frozen=True)
class PageGrid:
    blocks: tuple[GridBlock, ...]
    sheet_page: int | None  # which page of the template this is (1-based), told from row numbers
    lines_found: tuple[int, int]  # horizontal, vertical ruled lines found

    @property
    def rows(self) -> tuple[GridRow, ...]:
        return tuple(r for b in self.blocks for r in b.rows)


@dataclass(frozen=True)
class CellWriting:
    """Whether a cell holds writing (writing.cell_writing), and how much."""

    written: bool
    share: float  # of the cell's pixels (inside its box) that are writing: the strokes' pixels
    contrast: float  # gray levels the writing is below its paper (its darker part); 0 without writing
    marks: tuple[str, ...] = ()  # what each mark of the cell was taken for, largest first


@dataclass(frozen=True)
class RowCells:
    row_number: int
    boxes: tuple[tuple[str, Box], ...]
    crops: tuple[tuple[str, np.ndarray], ...]  # cleaned gray crops, lines removed, per column
    ink: tuple[tuple[str, float], ...]  # share of ink pixels per column
    writing: tuple[tuple[str, CellWriting], ...] = ()  # per column, as cut_row found it (empty: not judged)

    def crop(self, column: str) -> np.ndarray:
        return dict(self.crops)[column]


@dataclass(frozen=True)
class FieldReading:
    value: str  # the best value ("" when nothing usable was read)
    raw: str  # what the engine read, before any correction
    confidence: float  # 0..1
    band: Band
    alternatives: tuple[str, ...] = ()


EMPTY_FIELD = FieldReading(value="", raw="", confidence=1.0, band="accept")
# a cell that holds writing the readers could not read: the row is written all the same
_UNREAD = frozenset({"name_unreadable", "postal_unreadable"})


@dataclass(frozen=True)
class RowReading:
    row_number: int
    name: FieldReading
    postal: FieldReading
    postal_valid: bool
    commune: str
    signature: SignatureState
    flags: tuple[str, ...] = ()
    crops_png: tuple[tuple[str, bytes], ...] = ()  # per column, PNG bytes, for review
    boxes: tuple[tuple[str, Box], ...] = ()  # per column, in the source page image's pixels

    @property
    def is_blank(self) -> bool:
        """No writing in the row (nothing read, no cell that holds writing read as nothing, no
        signature): not a signature row. A written row is never blank (../shared/DESIGN.md)."""
        return not self.name.value and not self.name.raw and not self.postal.raw \
            and self.signature == "empty" and not any(f.startswith("row_") or f in _UNREAD for f in self.flags)


@dataclass(frozen=True)
class PageIssue:
    code: str  # machine code, e.g. "grid_not_found"
    message: str  # for people: what went wrong
    hint: str = ""  # for people: what to do


@dataclass(frozen=True)
class PageQuality:
    rotation: int = 0
    skew_deg: float = 0.0
    lines_found: tuple[int, int] = (0, 0)
    rows_found: int = 0
    rows_expected: int = 0
    geometry_seconds: float = 0.0  # normalise, grid and cells: everything before recognition
    geometry_cpu_seconds: float = 0.0  # the same, CPU time of the process (a worker runs on one core)
    seconds: float = 0.0


@dataclass(frozen=True)
class PageResult:
    ref: PageRef
    rows: tuple[RowReading, ...] = ()
    issues: tuple[PageIssue, ...] = ()
    quality: PageQuality = field(default_factory=PageQuality)
    sheet_page: int | None = None
    overlay_png: bytes = b""  # the debug overlay, when asked for

    @property
    def failed(self) -> bool:
        return any(i.code.startswith("page_") for i in self.issues) and not self.rows


# --- a batch's report (the run report shows it) ---------------------------------------------

@dataclass(frozen=True)
class Failure:
    file: str  # as `text.path_text` shows it
    page: int | None
    reason: str
    hint: str = ""

    def __post_init__(self) -> None:  # a reason may quote a library's message: never a raw control character
        object.__setattr__(self, "reason", printable(self.reason, keep_newlines=False))
        object.__setattr__(self, "hint", printable(self.hint, keep_newlines=False))

    def __str__(self) -> str:
        where = self.file if self.page is None else f"{self.file}:page {self.page}"
        return f"{where}: {self.reason}" + (f" ({self.hint})" if self.hint else "")


@dataclass(frozen=True)
class PageSummary:
    """What the run report shows of a page (never a name)."""

    file: str
    page: int
    status: Literal["done", "failed"]
    rows: int = 0
    flagged: int = 0
    reason: str = ""
    overlay_png: bytes = b""
    page_sha256: str = ""


@dataclass(frozen=True)
class Retake:
    """A page found to be the same sheet as an earlier one (ledger/retakes.py)."""

    page_sha256: str  # the later page (the retake)
    of_page_sha256: str  # the earlier page: its rows stay the signers' rows
    rows_alike: int  # row numbers where both pages hold the same signer's name
    rows_both: int  # row numbers both pages hold
    where: str = ""  # the later page as the report shows it: file:page N
    of_where: str = ""

    def __str__(self) -> str:
        return (f"{self.where} is the same sheet as {self.of_where} ({self.rows_alike} of the {self.rows_both} "
                "rows both hold read alike): its rows are counted once, as duplicates of that page's")


@dataclass
class BatchReport:
    files: int = 0
    pages_total: int = 0  # pages counted in the inputs before the run (0: unknown)
    pages_done: int = 0
    pages_skipped: int = 0
    rows_added: int = 0
    rows_read: int = 0  # non-blank rows read on the pages done
    decisions_kept: int = 0  # --reprocess: rows read again that kept a person's decision
    decisions_differ: int = 0  # ... of which the machine now reads otherwise (flagged)
    decisions_unmatched: int = 0  # ... decided rows not found again (kept, flagged)
    flagged: int = 0
    duplicates: int = 0
    failures: list[Failure] = field(default_factory=list)
    pages: list[PageSummary] = field(default_factory=list)
    page_hashes: list[str] = field(default_factory=list)  # pages written by this run, for the report
    retakes: list[Retake] = field(default_factory=list)  # pages of this run that are a sheet read before
    seconds: float = 0.0
    workers: int = 1
    executor: str = "local"
    interrupted: bool = False

    @property
    def pages_failed(self) -> int:
        return len({(f.file, f.page) for f in self.failures})

    @property
    def pages_per_minute(self) -> float | None:
        return self.pages_done / self.seconds * 60 if self.pages_done and self.seconds > 0 else None


@dataclass(frozen=True)
class ProgressEvent:
    where: str  # file:page just finished
    report: BatchReport


Progress = Callable[[ProgressEvent], None]
