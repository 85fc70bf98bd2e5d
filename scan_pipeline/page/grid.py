"""Find the grid from what is printed: ruled lines, blocks, columns, rows and printed row numbers.

Nothing here uses the template's millimetres: a sheet printed at another scale or margin has the
same lines in other places. Columns are taken in the template's order and checked against its
width shares (which also tells an upside-down page); rows are numbered by reading the printed
numbers and fitting them to the template's sequences, which also tells which page of the sheet
this is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from itertools import combinations

import cv2
import numpy as np

from scan_pipeline.core.ocr import DIGITS, OcrEngine
from scan_pipeline.core.records import Box, FlatPage, GridBlock, GridRow, PageGrid, PageIssue
from scan_pipeline.core.template import Template
from scan_pipeline.page.numbers import fit_shapes, shape_scores
from scan_pipeline.page.pixels import ink_share, runs

# Sum of absolute differences between found and template column shares above which a structure
# of ruled lines is not the signature grid.
MAX_COLUMN_MISFIT = 0.35


@dataclass(frozen=True)
class PageMasks:
    ink: np.ndarray  # 255 where there is ink
    horizontal: np.ndarray  # 255 on horizontal ruled lines
    vertical: np.ndarray  # 255 on vertical ruled lines

    @cached_property
    def lines(self) -> np.ndarray:
        return cv2.bitwise_or(self.horizontal, self.vertical)

    @cached_property
    def lines_wide(self) -> np.ndarray:
        """The ruled lines and a pixel around them: what is whitened out of a cell."""
        return cv2.dilate(self.lines, np.ones((3, 3), np.uint8))


@dataclass(frozen=True)
class GridSearch:
    grid: PageGrid | None
    issues: tuple[PageIssue, ...]
    upside_down: bool = False


def page_masks(gray: np.ndarray) -> PageMasks:
    h, w = gray.shape
    block = max(15, (w // 60) | 1)
    ink = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 18)
    # Lines are found on the page smoothed along them: a faint or broken line (a photo, a worn
    # printer) becomes solid, while noise and handwriting do not become long.
    smear = max(5, w // 110)

    def lines_along(kernel: tuple[int, int], length: tuple[int, int]) -> np.ndarray:
        smooth = cv2.blur(gray, kernel)
        mask = cv2.adaptiveThreshold(smooth, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, block, 12)
        return cv2.morphologyEx(mask, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, length))

    horizontal = _without_page_long(lines_along((smear, 1), (w // 30, 1)), axis=1)
    vertical = _without_page_long(lines_along((1, smear), (1, h // 70)), axis=0)
    # the outermost 1 % is the paper's edge (a photo flattened, a scanner's lid), never printed grid
    band_y, band_x = max(2, h // 100), max(2, w // 100)
    for mask in (horizontal, vertical):
        mask[:band_y, :] = 0
        mask[-band_y:, :] = 0
        mask[:, :band_x] = 0
        mask[:, -band_x:] = 0
    return PageMasks(ink, horizontal, vertical)


# A printed line stops at the sheet's margins; a line across (nearly) the whole page is a crease,
# a shadow's edge or the paper's own edge after a photo is flattened, and would join the grid to
# them into one block the size of the page.
PAGE_LONG = 0.9


def _without_page_long(mask: np.ndarray, axis: int) -> np.ndarray:
    """The line mask without the lines that run along `axis` across PAGE_LONG of the page or more."""
    covered = ink_share(mask, axis) >= PAGE_LONG
    if not covered.any():
        return mask
    out = mask.copy()
    if axis == 1:
        out[covered, :] = 0
    else:
        out[:, covered] = 0
    return out


def _vertical_lines(masks: PageMasks, box: Box) -> list[int]:
    sub = masks.vertical[box.y0:box.y1, box.x0:box.x1]
    return [box.x0 + (a + b) // 2 for a, b in runs(ink_share(sub, 0) >= 0.5, 2)]


FAINT_SHARE = 0.45  # of the darkest line: a column line fainter than this is taken for writing
FAINT_SHIFT = 3  # pixels: how far a column line may move from one row to the next (a crease)


def faint_columns(gray: np.ndarray, masks: PageMasks, box: Box, most: int) -> list[int]:
    """x of a block's vertical lines from the darkness they leave in every one of its rows: where
    a photo shaken across them smears them too faint for the line mask.

    In each row (between two horizontal lines) a pixel's darkness is its step below the lightest
    pixel beside it; a column line is dark at all heights of every row, writing only at some, so
    the row's low percentile keeps the lines and drops the writing, and the median over the rows
    drops a row's stray stroke. More than `most` such columns: print or writing, not a grid ([])."""
    horizontal = masks.horizontal[box.y0:box.y1, box.x0:box.x1]
    ys = [(a + b) // 2 for a, b in runs(ink_share(horizontal, 1) >= 0.5, 2)]
    reach = max(15, gray.shape[1] // 60) | 1  # wider than a shaken line's smear
    x0 = max(0, box.x0 - reach)  # the paper beside the outer lines, lighter than their smear
    sub = gray[box.y0:box.y1, x0:min(gray.shape[1], box.x1 + reach)]
    dark = cv2.subtract(cv2.dilate(sub, np.ones((1, reach), np.uint8)), sub)
    rows = []
    for top, bottom in zip(ys, ys[1:]):
        pad = (bottom - top) // 6
        if bottom - top - 2 * pad < 6:
            continue
        low = np.percentile(dark[top + pad:bottom - pad], 10, axis=0).astype(np.float32)
        rows.append(cv2.dilate(low[None], np.ones((1, 2 * FAINT_SHIFT + 1), np.float32))[0])
    if len(rows) < 3:
        return []
    profile = np.median(np.array(rows), axis=0)
    profile -= float(np.median(profile))
    if profile.max() <= 0:
        return []
    on = profile >= FAINT_SHARE * float(profile.max())
    xs = []
    for a, b in runs(on, reach // 2):  # a smeared line is a plateau: its middle, not its first top
        plateau = np.flatnonzero(profile[a:b] >= 0.95 * float(profile[a:b].max()))
        xs.append(x0 + a + int(round((plateau[0] + plateau[-1]) / 2)))
    return xs if len(xs) <= most else []


def find_blocks(masks: PageMasks) -> list[Box]:
    """Grid blocks: large connected structures of ruled lines, top to bottom.

    Pieces of one grid cut apart by gaps in its lines are joined: one under the other, with
    vertical lines at the same places.
    """
    h, w = masks.ink.shape
    # Components on a quarter-size copy: block boxes need no finer, and it is 16 times less work.
    f = 4
    # (no dilation: at this size it would bridge the grid to the text printed just under it)
    small = cv2.resize(masks.lines, (w // f, h // f), interpolation=cv2.INTER_AREA)
    n, _, stats, _ = cv2.connectedComponentsWithStats((small > 0).astype(np.uint8), connectivity=8)
    wide = sorted((Box(int(x) * f, int(y) * f, min(w, int(x + bw) * f), min(h, int(y + bh) * f))
                   for x, y, bw, bh, _ in stats[1:] if bw * f >= 0.4 * w and bh * f >= 0.005 * h),
                  key=lambda b: b.y0)
    blocks: list[Box] = []
    for box in wide:
        if blocks and 0 <= box.y0 - blocks[-1].y1 < 0.03 * h:
            above, here = _vertical_lines(masks, blocks[-1]), _vertical_lines(masks, box)
            shared = sum(1 for x in here if any(abs(x - a) <= w * 0.006 for a in above))
            if shared >= 3:
                prev = blocks[-1]
                blocks[-1] = Box(min(prev.x0, box.x0), prev.y0, max(prev.x1, box.x1), box.y1)
                continue
        blocks.append(box)
    return [b for b in blocks if b.width >= 0.4 * w and b.height >= 0.03 * h]


def square_up(flat: FlatPage, masks: PageMasks, tolerance_px: float = 3.0) -> FlatPage | None:
    """Warp the page so that the grid's outer frame is a rectangle, when it is not.

    A photo's outline is found to a few pixels; over a tall grid that leaves a slight keystone,
    enough for long lines to lean out of their columns. The grid's own frame is the better guide.
    Returns None when the frame is already square (scans) or cannot be traced.
    """
    from scan_pipeline.page.normalise import order_corners, refine_corners

    blocks = find_blocks(masks)
    if not blocks:
        return None
    block = max(blocks, key=lambda b: b.width * b.height)
    pad = 4
    sub = masks.lines[max(0, block.y0 - pad):block.y1 + pad, max(0, block.x0 - pad):block.x1 + pad]
    contours, _ = cv2.findContours(cv2.dilate(sub, np.ones((3, 3), np.uint8)), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    frame = max(contours, key=cv2.contourArea)
    offset = np.array([max(0, block.x0 - pad), max(0, block.y0 - pad)], np.float32)
    hull = cv2.convexHull(frame)
    approx = cv2.approxPolyDP(hull, 0.02 * cv2.arcLength(hull, True), True)
    if len(approx) != 4:
        return None
    corners = refine_corners(frame.reshape(-1, 2).astype(np.float32),
                              order_corners(approx.reshape(-1, 2).astype(np.float32))) + offset
    tl, tr, br, bl = corners
    x0, x1 = (tl[0] + bl[0]) / 2, (tr[0] + br[0]) / 2
    y0, y1 = (tl[1] + tr[1]) / 2, (bl[1] + br[1]) / 2
    target = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    if np.abs(corners - target).max() <= tolerance_px:
        return None
    H = cv2.getPerspectiveTransform(corners.astype(np.float32), target)
    gray = cv2.warpPerspective(flat.pixels, H, (flat.pixels.shape[1], flat.pixels.shape[0]),
                               flags=cv2.INTER_LINEAR, borderValue=255)
    transform = H @ np.array(flat.transform)
    return replace(flat, pixels=gray, transform=tuple(tuple(float(v) for v in row) for row in transform))


def _choose_columns(xs: list[int], widths: np.ndarray) -> tuple[list[int], float, float]:
    """The len(widths)+1 vertical lines that best fit the template's width shares.

    Returns the lines, the misfit as printed and the misfit if the page were upside down.
    """
    need = len(widths) + 1
    best: tuple[float, list[int], float] | None = None
    inner = xs[1:-1]
    for middle in combinations(inner, need - 2):
        cand = [xs[0], *middle, xs[-1]]
        share = np.diff(cand) / (cand[-1] - cand[0])
        err, err_flipped = float(np.abs(share - widths).sum()), float(np.abs(share - widths[::-1]).sum())
        if best is None or min(err, err_flipped) < min(best[0], best[2]):
            best = (err, cand, err_flipped)
    assert best is not None
    return best[1], best[0], best[2]


def _row_lines(masks: PageMasks, block: Box, xs: list[int]) -> list[int]:
    """y of the ruled lines across the block: they cross the number column too, strike-outs don't."""
    slack = max(2, (xs[-1] - xs[0]) // 300)
    sub = cv2.dilate(masks.horizontal[block.y0:block.y1, xs[0]:xs[-1]], np.ones((2 * slack + 1, 1), np.uint8))
    full = ink_share(sub, 1)
    first = ink_share(sub[:, : max(1, xs[1] - xs[0])], 1)
    found = [(block.y0 + (a + b) // 2, float(first[a:b].max())) for a, b in runs(full >= 0.5, join=2)]
    strong = [y for y, f in found if f >= 0.3]
    ys = strong
    if len(strong) >= 3:
        # A line whose part in the narrow number column is lost (a gap in the print) is kept when
        # it falls where the evenly spaced rows put a line; a strike-out falls mid-row.
        gaps = np.diff(strong)
        pitch = float(np.median(gaps[(gaps > 0.5 * np.median(gaps)) & (gaps < 1.5 * np.median(gaps))]))
        for y, f in found:
            if f < 0.3:
                steps = (y - min(strong, key=lambda s: abs(s - y))) / pitch
                if abs(steps - round(steps)) < 0.15:
                    ys.append(y)
        ys = sorted(ys)
    # Drop lines that cut a row in two much shorter rows (a strike-out through the number cell).
    while len(ys) > 3:
        gaps = np.diff(ys)
        typical = float(np.median(gaps[1:])) if len(gaps) > 2 else float(np.median(gaps))
        small = int(np.argmin(gaps[1:])) + 1 if len(gaps) > 1 else 0
        if gaps[small] >= 0.6 * typical:
            break
        # remove whichever end of the short gap leaves the more regular rows
        drop = small if small + 1 >= len(ys) - 1 or gaps[small + 1] + gaps[small] > typical * 1.4 else small + 1
        ys.pop(drop if drop > 0 else 1)
    return ys


def _number_crop(gray: np.ndarray, box: Box) -> np.ndarray | None:
    pad_x, pad_y = max(2, box.width // 12), max(2, box.height // 10)
    crop = gray[box.y0 + pad_y:box.y1 - pad_y, box.x0 + pad_x:box.x1 - pad_x]
    if crop.size == 0:
        return None
    # Stretch the contrast: a photographed number is a blurred gray, not black.
    dark, paper = float(crop.min()), float(np.percentile(crop, 95))
    if paper - dark < 40:
        return None
    crop = np.clip((crop.astype(np.float32) - dark) * (255.0 / (paper - dark)), 0, 255).astype(np.uint8)
    ink = crop < 128
    if ink.sum() < 6:
        return None
    ys, xs = np.nonzero(ink)
    crop = crop[max(0, ys.min() - 2):ys.max() + 3, max(0, xs.min() - 2):xs.max() + 3]
    scale = 36 / max(crop.shape[0], 1)  # printed digits read best at ~36 px high
    crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    bordered: np.ndarray = cv2.copyMakeBorder(crop, 12, 12, 12, 12, cv2.BORDER_CONSTANT, value=255)
    return bordered


WIDE_FOR_ONE = 1.2  # ink this many times wider than high holds two digits (one, even smeared, is narrower)


def _fits_ink(text: str, crop: np.ndarray) -> str:
    """The read, or "" when it has fewer digits than the ink is wide: a blurred "34" read "4"
    would number the row 4, and a page of such misreads a sheet's other page."""
    ink = crop < 128
    cols = np.flatnonzero(ink.any(axis=0))
    rows = np.flatnonzero(ink.any(axis=1))
    if len(text) != 1 or not len(cols):
        return text
    return "" if (cols[-1] - cols[0] + 1) > WIDE_FOR_ONE * (rows[-1] - rows[0] + 1) else text


def read_number(gray: np.ndarray, box: Box, engine: OcrEngine) -> tuple[str, int | None]:
    crop = _number_crop(gray, box)
    if crop is None:
        return "", None
    text = _fits_ink(engine.read_line(crop, whitelist=DIGITS).text.replace(" ", ""), crop)
    if not (text.isdigit() and len(text) <= 3):
        # a shaken photo smears the small printed digits: read again with their edges sharpened
        soft = cv2.GaussianBlur(crop, (0, 0), 2.0)
        sharp = cv2.addWeighted(crop, 2.2, soft, -1.2, 0)
        again = _fits_ink(engine.read_line(sharp, whitelist=DIGITS).text.replace(" ", ""), crop)
        if again.isdigit() and len(again) <= 3:
            text = again
    return text, int(text) if text.isdigit() and len(text) <= 3 else None


def _ranges(numbers: list[int]) -> str:
    """'11-14, 17, 20-22': consecutive numbers as ranges."""
    parts: list[str] = []
    for n in numbers:
        if parts and parts[-1].split("-")[-1] == str(n - 1):
            parts[-1] = f"{parts[-1].split('-')[0]}-{n}"
        else:
            parts.append(str(n))
    return ", ".join(parts)


def fit_numbers(reads: list[list[int | None]],
                template: Template) -> tuple[int | None, list[list[int | None] | None], int]:
    """Fit what was read in each found block to the template's printed sequences.

    Returns the sheet page, for every found block the number of each of its rows (None for a block
    that is not part of the grid, a None number for a row that cannot be placed) and how many read
    numbers agree with the fit. Misreads are outvoted by their neighbours; real gaps in the printed
    sequence (a row not printed) are kept because the sequence itself has them.
    """
    best: tuple[int, int | None, list[list[int | None] | None]] = (0, None, [None] * len(reads))
    for page in template.pages:
        grids = page.grids
        k = min(len(reads), len(grids))
        for found_ids in combinations(range(len(reads)), k):
            for grid_ids in combinations(range(len(grids)), k):
                total = 0
                numbers: list[list[int | None] | None] = [None] * len(reads)
                for f, g in zip(found_ids, grid_ids):
                    found, seq = reads[f], grids[g]
                    if len(found) > len(seq):
                        # more rows than printed (lines of text under the grid taken for rows):
                        # the sequence is placed where it fits, the rows around it stay unnumbered
                        scores = [sum(1 for i, n in enumerate(seq) if found[j + i] == n)
                                  for j in range(len(found) - len(seq) + 1)]
                        j = int(np.argmax(scores))
                        total += scores[j]
                        numbers[f] = [None] * j + list(seq) + [None] * (len(found) - len(seq) - j)
                        continue
                    scores = [sum(1 for i, r in enumerate(found) if r == seq[j + i])
                              for j in range(len(seq) - len(found) + 1)]
                    j = int(np.argmax(scores))
                    total += scores[j]
                    numbers[f] = list(seq[j:j + len(found)])
                if total > best[0]:
                    best = (total, page.page, numbers)
    return best[1], best[2], best[0]


def _join_fragments(layouts: list[tuple[Box, list[int], list[int]]],
                    page_width: int) -> list[tuple[Box, list[int], list[int]]]:
    """Join blocks that are pieces of one grid: the same columns, one under the other.

    Gaps in the ruled lines (a worn printer, a faint photo) can cut a grid in pieces; the pieces
    have the same column lines, and each lacks the header row but the first.
    """
    joined: list[tuple[Box, list[int], list[int]]] = []
    for block, xs, ys in sorted(layouts, key=lambda layout: layout[0].y0):
        if joined:
            prev_block, prev_xs, prev_ys = joined[-1]
            row_h = float(np.median(np.diff(prev_ys)))
            same_columns = max(abs(a - b) for a, b in zip(prev_xs, xs)) < page_width * 0.01
            if same_columns and ys[0] - prev_ys[-1] < 2.5 * row_h:
                merged = sorted(prev_ys + ys)
                ys_joined = [merged[0]]
                for y in merged[1:]:
                    if y - ys_joined[-1] > row_h * 0.4:
                        ys_joined.append(y)
                box = Box(min(prev_block.x0, block.x0), prev_block.y0, max(prev_block.x1, block.x1), block.y1)
                joined[-1] = (box, [(a + b) // 2 for a, b in zip(prev_xs, xs)], ys_joined)
                continue
        joined.append((block, xs, ys))
    return joined


def _outermost(layouts: list[tuple[Box, list[int], list[int]]]) -> list[tuple[Box, list[int], list[int]]]:
    """Drop structures inside a grid block (handwriting that looks ruled): they are part of it."""
    def inside(a: Box, b: Box) -> bool:
        return b.x0 <= a.x0 and b.y0 <= a.y0 and b.x1 >= a.x1 and b.y1 >= a.y1

    return [la for la in layouts if not any(o is not la and inside(la[0], o[0]) for o in layouts)]


def _fit_by_shape(gray: np.ndarray, layouts: list[tuple[Box, list[int], list[int]]],
                  template: Template) -> tuple[int, list[list[int | None] | None]] | None:
    labels = tuple(dict.fromkeys(str(n) for _, rows in template.blocks for n in rows))
    scores = []
    for _, xs, ys in layouts:
        found = shape_scores(gray, [Box(xs[0], top, xs[1], bottom) for top, bottom in zip(ys[1:-1], ys[2:])], labels)
        if found is None:
            return None
        scores.append(found)
    return fit_shapes(scores, labels, template)


def find_grid(flat: FlatPage, template: Template, engine: OcrEngine,
              masks: PageMasks | None = None) -> GridSearch:
    gray = flat.pixels
    masks = masks or page_masks(gray)
    widths = np.array([c.width for c in template.columns])
    found_blocks = find_blocks(masks)
    h_count = len(runs(ink_share(masks.horizontal, 1) >= 0.3, 2))
    v_count = len(runs(ink_share(masks.vertical, 0) >= 0.1, 2))
    if not found_blocks:
        return GridSearch(None, (PageIssue("page_no_grid", "no signature grid was found on this page",
                                           "check that the page is a petition sheet and is not blank"),))
    layouts: list[tuple[Box, list[int], list[int]]] = []
    flipped: dict[int, bool] = {}
    issues: list[PageIssue] = []
    for block in found_blocks:
        # widened so a line that still leans a little (a photo's residual perspective) counts whole
        slack = max(3, block.height // 150)
        sub = cv2.dilate(masks.vertical[block.y0:block.y1, block.x0:block.x1], np.ones((1, 2 * slack + 1), np.uint8))
        xs = [block.x0 + (a + b) // 2 for a, b in runs(ink_share(sub, 0) >= 0.5, 2)]
        if len(xs) < len(widths) + 1:
            xs = faint_columns(gray, masks, block, 2 * (len(widths) + 1))
        if len(xs) < len(widths) + 1:
            issues.append(PageIssue("block_columns", f"a grid block at y={block.y0} has {max(0, len(xs) - 1)} "
                                    f"columns, the template has {len(widths)}"))
            continue
        xs, err, err_flipped = _choose_columns(xs, widths)
        if min(err, err_flipped) > MAX_COLUMN_MISFIT:
            continue  # lines, but not the template's columns (a box, a table of something else)
        ys = _row_lines(masks, block, xs)
        if len(ys) < 3:
            issues.append(PageIssue("block_rows", f"a grid block at y={block.y0} has no rows"))
            continue
        flipped[id(block)] = err_flipped < err
        layouts.append((block, xs, ys))
    layouts = _outermost(layouts)
    # upside down when the columns read right to left (the narrow number column on the right)
    if sum(1 if flipped[id(block)] else -1 for block, _, _ in layouts) > 0:
        return GridSearch(None, (), upside_down=True)
    layouts = _outermost(_join_fragments(layouts, gray.shape[1]))
    if not layouts:
        return GridSearch(None, tuple(issues) + (PageIssue(
            "page_no_grid", "no grid block with the template's columns was found",
            "check that the sheet matches the template (--template)"),))

    reads: list[list[int | None]] = []
    texts: list[list[str]] = []
    for _, xs, ys in layouts:
        block_reads, block_texts = [], []
        for top, bottom in zip(ys[1:-1], ys[2:]):  # ys[0]..ys[1] is the header row
            text, value = read_number(gray, Box(xs[0], top, xs[1], bottom), engine)
            block_reads.append(value)
            block_texts.append(text)
        reads.append(block_reads)
        texts.append(block_texts)
    # no printed number read at all: not a block of the signature grid
    numbered = [i for i, r in enumerate(reads) if any(v is not None for v in r)]
    fitted = fit_numbers([reads[i] for i in numbered], template) if numbered else (None, [], 0)
    sheet_page, agree = fitted[0], fitted[2]
    numbers: list[list[int | None] | None] = [None] * len(layouts)
    for i, n in zip(numbered, fitted[1]):
        numbers[i] = n
    n_rows = sum(len(r) for r, n in zip(reads, numbers) if n is not None) or sum(len(reads[i]) for i in numbered)
    # Reads must outvote misreads; but where the rows found are exactly those the page prints (as
    # many, in as many blocks), the rows themselves place the numbers: two agreeing reads then
    # tell the page and confirm the fit (a shaken photo's small printed digits are mostly unread).
    matched = [len(r) for r, n in zip(reads, numbers) if n is not None]
    exact = sheet_page is not None and sorted(matched) == sorted(
        len(rows) for p, rows in template.blocks if p == sheet_page)
    if sheet_page is None or agree < (2 if exact else max(2, n_rows // 4)):
        # too smeared for Tesseract: the numbers' shapes against the numbers the sheet prints
        by_shape = _fit_by_shape(gray, layouts, template)
        if by_shape is None and not numbered:
            return GridSearch(None, tuple(issues) + (PageIssue(
                "page_not_this_form", "a ruled table was found, but no printed row number in it: "
                "this does not look like the template's signature sheet",
                "check that the page is a petition sheet (or pass its --template)"),))
        if by_shape is None:
            return GridSearch(None, tuple(issues) + (PageIssue(
                "page_rows_unnumbered",
                f"the printed row numbers could not be read ({agree} of {n_rows} rows agree with the template)",
                "check the scan's quality; the page is not guessed"),))
        sheet_page, numbers = by_shape

    blocks = []
    keys = template.column_keys
    printed = template.rows_on_page(sheet_page)
    for (_, xs, ys), block_numbers, block_reads, block_texts in zip(layouts, numbers, reads, texts, strict=True):
        if block_numbers is None:
            continue  # a structure that is not part of the sheet's grid
        # ruled lines going on past the page's last printed number (a notice in boxes, a photo's
        # table edge) are no rows: nothing of the sheet is printed there
        known = [i for i, n in enumerate(block_numbers) if n is not None]
        if known and block_numbers[known[-1]] == printed[-1]:
            ys = ys[:known[-1] + 3]
        rows = []
        for i, (top, bottom) in enumerate(zip(ys[1:-1], ys[2:])):
            number = block_numbers[i]
            read = block_reads[i]
            conf = 1.0 if read == number else (0.6 if read is None else 0.3)
            cells = tuple((k, Box(xs[j], top, xs[j + 1], bottom)) for j, k in enumerate(keys))
            rows.append(GridRow(number, block_texts[i], conf, cells))
        blocks.append(GridBlock(Box(xs[0], ys[0], xs[-1], ys[-1]), tuple(rows)))
    grid = PageGrid(tuple(blocks), sheet_page, (h_count, v_count))
    printed = template.rows_on_page(sheet_page)
    if len(grid.rows) != len(printed):
        found = {r.number for r in grid.rows}
        missing = [n for n in printed if n not in found]
        said = f"; row(s) {_ranges(missing)} not found" if missing else ""
        issues.append(PageIssue("page_rows_count", f"{len(grid.rows)} rows found, the template prints "
                                f"{len(printed)} on page {sheet_page}{said}",
                                "the numbered rows found are in the ledger; if the photo or scan cuts the "
                                "sheet, take it again with the whole sheet in view (--debug-dir draws what "
                                "was found)"))
    return GridSearch(grid, tuple(issues))
