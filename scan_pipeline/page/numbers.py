"""Printed row numbers read by their shape, where Tesseract cannot read them.

A shaken or low-resolution photo smears the small printed digits (about 10 px high at 100 dpi)
past what Tesseract reads, though a person still reads them. The sheet prints them itself
(synth/sheet.py: DejaVu Sans, centred in the cell), so a number cell is compared with each number
the template prints, drawn in that font: both are scaled to one height, placed as the sheet
centres them, softened alike (the photo's smear and the drawing's sharpness meet half way) and
compared by normalised correlation. Numbers are never said one by one: whole printed runs are
placed (fit_shapes), and only a placing that clearly beats every other is kept.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations, product

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from scan_pipeline.core.errors import MissingDependencyError
from scan_pipeline.core.fonts import font_path
from scan_pipeline.core.records import Box
from scan_pipeline.core.template import Template

HEIGHT, WIDTH = 28, 72  # the canvas numbers are compared on; digits scaled to INK_HEIGHT high
INK_HEIGHT = 20
SOFTEN = 1.6  # Gaussian sigma on the canvas: a drawing and a smeared photo meet half way
MIN_FIT = 0.6  # mean correlation, over the rows placed, of a placing of the printed numbers
MIN_FIT_MARGIN = 0.015  # ... and how much better a row than the next best placing (mean over the rows)


def _canvas(ink: np.ndarray, centre: float) -> np.ndarray | None:
    """Ink (1 = dark, float) scaled to INK_HEIGHT by its rows, softened, on a canvas whose middle is
    x = `centre` of the ink: the sheet centres a number in its cell, so where the ink sits tells a
    "12" whose faint "1" is lost from a "2"."""
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0.5), np.flatnonzero(ink.max(axis=0) > 0.5)
    if rows.size == 0 or cols.size == 0:
        return None
    scale = INK_HEIGHT / (rows[-1] - rows[0] + 1)
    if (cols[-1] - cols[0] + 1) * scale > WIDTH - 4:
        return None  # far wider than a number of the sheet: not one
    band = ink[rows[0]:rows[-1] + 1]
    small = cv2.resize(band, (max(1, int(round(band.shape[1] * scale))), INK_HEIGHT), interpolation=cv2.INTER_AREA)
    out = np.zeros((HEIGHT, WIDTH), np.float32)
    shift = int(round(WIDTH / 2 - centre * scale))  # canvas x of the ink's x = 0
    x0, x1 = max(0, -shift), min(small.shape[1], WIDTH - shift)
    if x1 <= x0:
        return None
    y = (HEIGHT - INK_HEIGHT) // 2
    out[y:y + INK_HEIGHT, x0 + shift:x1 + shift] = small[:, x0:x1]
    soft: np.ndarray = cv2.GaussianBlur(out, (0, 0), SOFTEN)
    return soft


@lru_cache(maxsize=256)
def _drawn(label: str) -> np.ndarray | None:
    """The label as the sheet prints it (synth/sheet.py centres it by its advance width)."""
    font = ImageFont.truetype(font_path("regular"), 64)
    img = Image.new("L", (64 * (len(label) + 1), 96), 255)
    ImageDraw.Draw(img).text((16, 8), label, font=font, fill=0)
    return _canvas(1.0 - np.asarray(img, np.float32) / 255.0, 16 + font.getlength(label) / 2)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x - x.mean()
    n = float(np.linalg.norm(x))
    return x / n if n > 0 else x


@lru_cache(maxsize=16)
def _bank(labels: tuple[str, ...]) -> np.ndarray | None:
    try:
        drawn = [_drawn(label) for label in labels]
    except MissingDependencyError:  # without the sheet's font there is nothing to compare with
        return None
    if any(d is None for d in drawn):
        return None
    return np.stack([_unit(d).ravel() for d in drawn if d is not None])


def _cell_ink(gray: np.ndarray, box: Box) -> np.ndarray | None:
    """The number's ink in its cell (1 = dark), without the ruled lines' edges and the photo's
    speckle: the cell inside its lines, stretched between paper and darkest ink, and only the
    strokes of the parts that reach the cell's middle band."""
    pad_x, pad_y = max(2, box.width // 10), max(2, box.height // 6)
    cell = gray[box.y0 + pad_y:box.y1 - pad_y, box.x0 + pad_x:box.x1 - pad_x]
    if cell.size == 0 or min(cell.shape) < 6:
        return None
    soft = cv2.GaussianBlur(cell.astype(np.float32), (0, 0), 1.0)
    paper, dark = float(np.percentile(soft, 90)), float(soft.min())
    if paper - dark < 25:
        return None  # nothing darker than the paper: no number
    ink = np.clip((paper - soft) / (paper - dark), 0.0, 1.0)
    strokes = (ink > 0.45).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(strokes, connectivity=8)
    h = cell.shape[0]
    top, tall = stats[:, cv2.CC_STAT_TOP], stats[:, cv2.CC_STAT_HEIGHT]
    middle = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] >= 4
              and top[i] < h * 0.7 and top[i] + tall[i] > h * 0.3 and tall[i] < h * 0.95]
    if not middle:
        return None
    keep = cv2.dilate(np.isin(labels, middle).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return np.where(keep, ink, 0.0).astype(np.float32)


def shape_scores(gray: np.ndarray, boxes: list[Box], labels: tuple[str, ...]) -> np.ndarray | None:
    """For each number cell, its correlation with each of `labels` drawn (rows x labels; 0 for a
    cell without ink), or None without the sheet's font."""
    bank = _bank(labels)
    if bank is None:
        return None
    out = np.zeros((len(boxes), len(labels)), np.float32)
    for i, box in enumerate(boxes):
        ink = _cell_ink(gray, box)
        canvas = None if ink is None else _canvas(ink, ink.shape[1] / 2)  # the cell's middle
        if canvas is not None:
            out[i] = bank @ _unit(canvas).ravel()
    return out


def fit_shapes(scores: list[np.ndarray], labels: tuple[str, ...], template: Template,
               ) -> tuple[int, list[list[int | None] | None]] | None:
    """The sheet page and each block's row numbers that the shapes fit best, placing whole printed
    sequences (as grid.fit_numbers does with the numbers read), or None when no placing stands out.

    One number at a time a smeared "16" looks like "18"; a block of them placed together rarely
    does: the correct run of the sequence scores every row, a run shifted by one misses most.
    """
    column = {label: i for i, label in enumerate(labels)}
    n_rows = sum(len(s) for s in scores)
    placings: list[tuple[float, int, list[list[int | None] | None]]] = []
    for page in template.pages:
        grids = page.grids
        k = min(len(scores), len(grids))
        for found_ids in combinations(range(len(scores)), k):
            for grid_ids in combinations(range(len(grids)), k):
                options = []
                for f, g in zip(found_ids, grid_ids):
                    seq, block = grids[g], scores[f]
                    if len(block) > len(seq):
                        break
                    ids, at = np.array([column[str(n)] for n in seq]), np.arange(len(block))
                    options.append([(float(block[at, ids[j:j + len(block)]].sum()), f, seq[j:j + len(block)])
                                    for j in range(len(seq) - len(block) + 1)])
                else:
                    for chosen in product(*options):
                        numbers: list[list[int | None] | None] = [None] * len(scores)
                        for _, f, run in chosen:
                            numbers[f] = list(run)
                        placings.append((sum(c[0] for c in chosen), page.page, numbers))
    if not placings or not n_rows:
        return None
    placings.sort(key=lambda p: -p[0])
    best = placings[0]
    placed = sum(len(n) for n in best[2] if n is not None)
    second = next((p[0] for p in placings[1:] if p[2] != best[2]), 0.0)
    if best[0] / placed < MIN_FIT or (best[0] - second) / placed < MIN_FIT_MARGIN or placed < n_rows / 2:
        return None
    return best[1], best[2]
