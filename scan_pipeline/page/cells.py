"""Cut a row into its cells: crop with a margin, remove the ruled lines, measure the ink."""

from __future__ import annotations

import cv2
import numpy as np

from scan_pipeline.core.config import CellsConfig
from scan_pipeline.core.records import Box, CellWriting, GridRow, RowCells
from scan_pipeline.page.grid import PageMasks
from scan_pipeline.page.pixels import runs
from scan_pipeline.page.writing import cell_writing, local_darkness

READ_INK = 160  # the readers see a crop's pixels darker than this (ink_box, trim_to_ink, clean_cell)


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    return Box(max(0, box.x0), max(0, box.y0), min(shape[1], box.x1), min(shape[0], box.y1))


def clean_ink(ink: np.ndarray, min_size: int) -> np.ndarray:
    """Ink without specks: connected blobs smaller than min_size in both directions are noise."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = (stats[:, cv2.CC_STAT_WIDTH] >= min_size) | (stats[:, cv2.CC_STAT_HEIGHT] >= min_size)
    keep[0] = False
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def line_reach(masks: PageMasks, row: GridRow) -> int:
    """How far into its cells the row's ruled lines reach from the cells' edges, in pixels, the
    whitened pixel around them included: a shaken photo smears a line into a band wider than a
    printed line, whose inner edge would be left in the cell as a stroke."""
    b = row.box
    r = max(3, b.height // 7)  # a band wider than this is no ruled line (a shadow, a strike)
    reach = 0
    for x in sorted({c.x0 for _, c in row.cells} | {c.x1 for _, c in row.cells}):
        near = masks.vertical[b.y0:b.y1, max(0, x - r):x + r + 1]
        on = np.flatnonzero((near > 0).mean(axis=0) >= 0.5) + max(0, x - r) - x
        reach = max(reach, *np.abs(on).tolist()) if len(on) else reach
    for y in (b.y0, b.y1):
        near = masks.horizontal[max(0, y - r):y + r + 1, b.x0:b.x1]
        on = np.flatnonzero((near > 0).mean(axis=1) >= 0.5) + max(0, y - r) - y
        reach = max(reach, *np.abs(on).tolist()) if len(on) else reach
    return int(reach) + 2


def cut_row(gray: np.ndarray, masks: PageMasks, row: GridRow, config: CellsConfig,
            photo: bool = False) -> RowCells:
    """Each writing cell of a row, cropped with a margin and its ruled lines whitened, and whether it
    holds writing. A cell whose writing the readers would hardly see (hairline, faint or pencil strokes,
    lighter than READ_INK or missed by the page's ink mask) is given to them drawn from its own
    contrast: its strokes darkened against its paper."""
    lines = masks.lines_wide
    # ruled lines run along the cell's edges only: straight strokes of the writing inside are kept
    # (on a photo, as far as its lines reach: a scan's shadow or strike is no line to follow)
    band = max(3, int(row.box.height * 0.08), line_reach(masks, row) if photo else 0)
    margin = int(row.box.height * config.margin)
    min_size = max(2, int(row.box.height * config.speck_px))
    crops, inks, writing = [], [], []
    for column, box in row.cells[1:]:  # the first column is the printed row number
        outer = _clip(Box(box.x0 - margin, box.y0 - margin, box.x1 + margin, box.y1 + margin), gray.shape)
        crop = gray[outer.y0:outer.y1, outer.x0:outer.x1].copy()
        line_part = lines[outer.y0:outer.y1, outer.x0:outer.x1] > 0
        iy0, iy1 = box.y0 - outer.y0 + band, box.y1 - outer.y0 - band
        ix0, ix1 = box.x0 - outer.x0 + band, box.x1 - outer.x0 - band
        if iy1 > iy0 and ix1 > ix0:
            line_part[iy0:iy1, ix0:ix1] = False
        inner_box = Box(box.x0 - outer.x0, box.y0 - outer.y0, box.x1 - outer.x0, box.y1 - outer.y0)
        found, strokes = cell_writing(crop, inner_box, row.box.height, config, line_part)
        raw = crop.copy() if found.written else None
        crop[line_part] = 255
        ink = masks.ink[outer.y0:outer.y1, outer.x0:outer.x1].copy()
        ink[line_part] = 0
        ink = clean_ink(ink, min_size)
        inner = ink[box.y0 - outer.y0:box.y1 - outer.y0, box.x0 - outer.x0:box.x1 - outer.x0]
        crop[ink == 0] = np.maximum(crop[ink == 0], 235)  # paper texture and specks to white
        if raw is not None:
            on = strokes > 0
            if np.count_nonzero(crop[on] < READ_INK) < config.faint_visible * np.count_nonzero(on):
                crop = np.minimum(crop, contrasted(raw, strokes, found.contrast, row.box.height, config))
        crops.append((column, crop))
        inks.append((column, float((inner > 0).mean()) if inner.size else 0.0))
        writing.append((column, found))
    return RowCells(row_number=row.number or 0, boxes=row.cells, crops=tuple(crops), ink=tuple(inks),
                    writing=tuple(writing))


FAINT_TARGET = 200  # gray levels: the darker part of light writing is drawn this far below white


def contrasted(raw: np.ndarray, strokes: np.ndarray, contrast: float, row_height: int,
               config: CellsConfig) -> np.ndarray:
    """The strokes of `raw` (a cell crop) drawn from their own contrast: each pixel near a stroke as
    dark below white as it is below its paper, times the gain that brings the strokes' darker part
    `FAINT_TARGET` levels down; white elsewhere."""
    dark = local_darkness(raw, int(round(row_height * config.paper_px))).astype(np.float32)
    gain = FAINT_TARGET / max(contrast, 1.0)
    near = cv2.dilate(strokes, np.ones((3, 3), np.uint8)) > 0
    out = np.full(raw.shape, 255, np.uint8)
    out[near] = np.clip(255 - dark[near] * gain, 0, 255).astype(np.uint8)
    return out


def holds_writing(cells: RowCells, column: str, config: CellsConfig) -> CellWriting:
    """Whether a cut cell holds writing: as `cut_row` found it, or (cells cut otherwise, as tests and
    scripts build them) judged from the cleaned crop alone."""
    found = dict(cells.writing)
    if column in found:
        return found[column]
    crop = cells.crop(column)
    box = dict(cells.boxes).get(column)
    height = box.height if box is not None else crop.shape[0]
    my = max(0, (crop.shape[0] - height) // 2)
    mx = max(0, (crop.shape[1] - box.width) // 2) if box is not None else 0
    inner = Box(mx, my, crop.shape[1] - mx, crop.shape[0] - my)
    return cell_writing(crop, inner, height, config)[0]


def ink_box(crop: np.ndarray, threshold: int = 160, pad: int = 4) -> Box | None:
    """The box of the crop's ink with `pad` pixels around (within the crop), or None when it holds none."""
    ys, xs = np.nonzero(crop < threshold)
    if len(xs) < 8:
        return None
    return Box(max(0, int(xs.min()) - pad), max(0, int(ys.min()) - pad),
               min(crop.shape[1], int(xs.max()) + pad + 1), min(crop.shape[0], int(ys.max()) + pad + 1))


def trim_to_ink(crop: np.ndarray, threshold: int = 160, pad: int = 4) -> np.ndarray | None:
    """The crop cut to its ink, or None when it holds none."""
    box = ink_box(crop, threshold, pad)
    return None if box is None else crop[box.y0:box.y1, box.x0:box.x1]


OCR_BORDER = 16  # white pixels around a line given to Tesseract


def scale_line(trimmed: np.ndarray, height: int) -> tuple[np.ndarray, float]:
    """A line cut to its ink scaled to a fixed text height with a white border, as Tesseract likes, and
    the scale (a column x of the result is column (x - OCR_BORDER) / scale of the line)."""
    scale = height / max(trimmed.shape[0], 1)
    scaled = cv2.resize(trimmed, None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    b = OCR_BORDER
    return cv2.copyMakeBorder(scaled, b, b, b, b, cv2.BORDER_CONSTANT, value=255), scale


def prepare_for_ocr(crop: np.ndarray, height: int) -> np.ndarray | None:
    """Trim to the ink, scale to a fixed text height, add a white border, as Tesseract likes."""
    trimmed = trim_to_ink(crop)
    return None if trimmed is None else scale_line(trimmed, height)[0]


def text_height(image: np.ndarray, threshold: int = 160) -> int:
    """The height of the line's body: the rows holding the middle 80 % of its ink (ascenders, descenders,
    accents and stray specks left out)."""
    ys = np.nonzero(image < threshold)[0]
    if len(ys) < 8:
        rows: int = image.shape[0]
        return rows
    lo, hi = np.percentile(ys, [10, 90])
    return max(4, int(hi - lo + 1))


def ink_gaps(image: np.ndarray, threshold: int = 160) -> list[tuple[int, int]]:
    """Runs of columns without ink between two inked columns: [x0, x1)."""
    xs = np.flatnonzero((image < threshold).any(axis=0))
    if len(xs) < 2:
        return []
    return [(int(xs[i] + 1), int(xs[i + 1])) for i in np.flatnonzero(np.diff(xs) > 1)]


def word_gaps(image: np.ndarray, min_body: float, min_contrast: float,
              threshold: int = 160) -> list[tuple[int, int]]:
    """The line's gaps that may part two words, widest first: at least `min_body` of the letters' body
    height wide, and `min_contrast` times the line's median gap (block capitals written apart leave
    wide gaps between all their letters: only a gap that stands out is a space)."""
    gaps = ink_gaps(image, threshold)
    if not gaps:
        return []
    widths = np.array([x1 - x0 for x0, x1 in gaps])
    least = max(min_body * text_height(image, threshold), min_contrast * float(np.median(widths)))
    return sorted((g for g, w in zip(gaps, widths) if w >= least), key=lambda g: g[0] - g[1])


STRAY_SHARE = 0.02  # of a cell's ink: a group of marks this light, a cell's height from the rest, is no writing


def clean_cell(crop: np.ndarray, margin: float, threshold: int = 160) -> np.ndarray:
    """A cell cut with `margin` (share of the row height, as cut_row does) made fit for reading one line:

    - strokes cut where a ruled line was whitened are bridged again (only across the two line bands);
    - ink that belongs to the neighbouring rows is dropped: blobs that stay inside the top or bottom
      margin, or that come in from the crop's edge and stop short of the middle of the cell;
    - a few marks more than the cell's height away from the rest of the ink are dropped.
    """
    h, w = crop.shape[:2]
    if h < 8 or w < 8:
        return crop
    m = int(round(h * margin / (1 + 2 * margin)))  # where the ruled lines ran
    out = crop.copy()
    band = max(3, int(round(h * 0.06)))
    kernel = np.ones((2 * band + 1, 1), np.uint8)
    for y in (m, h - m):
        y0, y1 = max(0, y - 2 * band), min(h, y + 2 * band + 1)
        part = out[y0:y1]
        bridged = cv2.dilate(cv2.erode(part, kernel), kernel)  # a vertical closing of the ink
        lo, hi = max(0, y - band) - y0, min(h, y + band + 1) - y0
        part[lo:hi] = np.minimum(part[lo:hi], bridged[lo:hi])
    ink = (out < threshold).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    top_zone, bottom_zone = m + band, h - m - band
    middle0, middle1 = int(h * 0.35), int(h * 0.65)
    drop = np.zeros(n, bool)
    for i in range(1, n):
        y, bh = stats[i, cv2.CC_STAT_TOP], stats[i, cv2.CC_STAT_HEIGHT]
        bottom = y + bh
        in_margin = bottom <= top_zone or y >= bottom_zone
        from_above = y <= 1 and bottom < middle0
        from_below = bottom >= h - 1 and y > middle1
        drop[i] = in_margin or from_above or from_below
    if drop.any():
        out[drop[labels]] = 255
    # a little ink far beside the writing (a speck, a pen touch at the cell's end) is no part of it: the
    # line would be read, and its gaps looked for, across all the blank paper up to it
    mass = (out < threshold).sum(axis=0)
    parts = runs(mass > 0, join=h)
    if len(parts) > 1:
        total = float(mass.sum())
        for a, b in parts:
            if mass[a:b].sum() < STRAY_SHARE * total:
                out[:, a:b] = 255
    return out


def row_ink(cells: RowCells, columns: tuple[str, ...] = ("name", "postal_code", "signature"),
            threshold: int = 200) -> np.ndarray:
    """The row's ink, name cell to signature cell, side by side, from the cut crops (each cut back to its
    cell, without the margins): only the ruled lines along the cells' edges are gone, so a stroke
    through the row (a strike) is kept whole but for short breaks where it crosses the column lines."""
    boxes = dict(cells.boxes)
    parts = []
    for column in columns:
        if column not in dict(cells.crops):
            continue
        crop = cells.crop(column)
        box = boxes.get(column)
        mx = max(0, (crop.shape[1] - box.width) // 2) if box is not None else 0
        parts.append(crop[:, mx:crop.shape[1] - mx] if crop.shape[1] - 2 * mx > 0 else crop)
    if not parts:
        return np.zeros((1, 1), np.uint8)
    h = min(c.shape[0] for c in parts)
    return np.hstack([np.where(c[:h] < threshold, 255, 0).astype(np.uint8) for c in parts])
