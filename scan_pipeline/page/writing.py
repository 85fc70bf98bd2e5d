"""Whether a cell holds writing (../shared/DESIGN.md, "Written row").

Writing is a name, a code, a signature, a ditto mark, a strike-through, in any pen: hairline (1 px),
faint or pencil strokes included. Specks, ruled-line fragments, shadow edges, folds and a stray pen
touch are not writing. `cell_writing` decides, from the cell's own gray levels:

1. The ink is what is darker than its *local paper*: the brightest level within a few pixels
   (`[cells] paper_px`, a gray closing), so that a stroke is measured against the paper just
   beside it. A shadow, a dark corner of a photo or anything wider than that is paper, not ink; a
   light pencil stroke missed by the page's ink mask (`grid.page_masks`) is still ink when it is
   `stroke_contrast` gray levels (and `noise_sigmas` times the cell's noise) darker than its paper.
   The ruled lines found on the page are left out, then the ink is taken apart into marks (its
   connected pieces).
2. Each mark is judged by its shape: a speck (smaller than `mark_px` both ways); part of a dark
   region (the ragged edge of a solid dark area a row long, a mass of dots, a mark riddled with
   pin-holes: a shadow a bilevel scan broke up); a ruled-line fragment (thin, straight, along the
   cell's edge and near it: a line doubled or offset, a printer's dash); a fold (thin, straight and
   light pieces lining up along the row over `fold_px`, or upright across the cell); a light broad
   shade; or a stroke.
3. The cell holds writing when one stroke is at least `writing_px` long, or when two or more
   shorter strokes are drawn (long, not blots, and `mark_contrast` dark: a ditto mark, a dash
   pair, a hairline broken into pieces). One small mark alone is a stray pen touch.

A light pencil strike-through is not told from a fold's crease (both thin, straight and light).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from scan_pipeline.core.config import CellsConfig
from scan_pipeline.core.records import Box, CellWriting

SPECK, LINE, FOLD, SHADOW, SMALL, STROKE = "speck", "line", "fold", "shadow", "small", "stroke"


NO_WRITING = CellWriting(False, 0.0, 0.0)


def local_darkness(gray: np.ndarray, size: int) -> np.ndarray:
    """How much darker each pixel is than the brightest paper within `size` pixels (a black-hat):
    strokes narrower than `size` stand out, a shadow or a wide dark region does not."""
    size = max(3, size | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (size, size))
    return cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)


def noise_level(gray: np.ndarray) -> float:
    """The paper's noise (gray levels, one standard deviation), from pixel-to-pixel differences."""
    if gray.shape[0] < 2 or gray.shape[1] < 2:
        return 0.0
    d = np.diff(gray.astype(np.int16), axis=1)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(2))


def cell_writing(gray: np.ndarray, box: Box, row_height: int, config: CellsConfig,
                 lines: np.ndarray | None = None) -> tuple[CellWriting, np.ndarray]:
    """Whether the cell `box` (in the crop's pixels) of the gray crop holds writing, and the writing's
    mask over the crop (255 on the strokes that count, the other marks left out).

    `gray`: the cell cut from the page, its ruled lines still in it; `lines`: 255 where the page's
    ruled lines run in the crop (they are not ink), or None when they are already whitened.
    """
    h = max(1, row_height)
    mask = np.zeros(gray.shape[:2], np.uint8)
    x0, y0, x1, y1 = max(0, box.x0), max(0, box.y0), min(gray.shape[1], box.x1), min(gray.shape[0], box.y1)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return NO_WRITING, mask
    size = int(round(h * config.paper_px))
    dark_all = local_darkness(gray, size)
    dark = dark_all[y0:y1, x0:x1]
    inner = gray[y0:y1, x0:x1]
    threshold = max(config.stroke_contrast, config.noise_sigmas * noise_level(inner))
    ink_all = (dark_all >= threshold).astype(np.uint8)
    ink = ink_all[y0:y1, x0:x1].copy()
    if lines is not None:
        ink[lines[y0:y1, x0:x1] > 0] = 0
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    if n <= 1:
        return NO_WRITING, mask
    shaded = _dark_regions(gray, ink_all, float(np.percentile(gray, 99)), size, h, config)
    if shaded is not None:
        shaded = shaded[y0:y1, x0:x1]
    cw, ch = x1 - x0, y1 - y0
    speck = max(2, h * config.mark_px)
    kinds: dict[int, str] = {}
    bars: list[_Bar] = []
    for i in range(1, n):
        bx, by, bw, bh, area = (int(v) for v in stats[i])
        if max(bw, bh) < speck:
            kinds[i] = SPECK
            continue
        piece = labels[by:by + bh, bx:bx + bw] == i
        if shaded is not None and float(shaded[by:by + bh, bx:bx + bw][piece].mean()) > 0.5:
            kinds[i] = SHADOW
            continue
        if area >= config.porous_holes * 4 and _holes(piece) >= config.porous_holes:
            kinds[i] = SHADOW  # riddled with pin-holes of paper: a dark region broken up into dots
            continue
        here = dark[by:by + bh, bx:bx + bw][piece]
        contrast = float(np.percentile(here, 90))
        bar = _bar(i, piece, bx, by, h, config, contrast)
        kind = _line_kind(bar, cw, ch, h, config) if bar is not None else None
        if kind is not None:
            kinds[i] = kind
            continue
        if bar is not None and bar.light:
            bars.append(bar)  # perhaps a piece of a crease: judged with the others below
        if contrast < config.fold_contrast and _thickness(piece) > 1.5 * max(2.0, h * config.line_thickness):
            kinds[i] = SHADOW  # light and broad: a shade (a shadow's corner, a soft edge), no pen's stroke
        elif max(bw, bh) >= h * config.writing_px:
            kinds[i] = STROKE
        else:  # short: a dash or a ditto stroke if drawn (long and dark enough), else a speck or noise
            kinds[i] = SMALL if _stroke_shaped(bw, bh, area) and contrast >= config.mark_contrast else SPECK
    for i in _creases(bars, cw, ch, h, config):
        kinds[i] = FOLD
    strokes = [i for i, k in kinds.items() if k == STROKE]
    small = [i for i, k in kinds.items() if k == SMALL]
    order = tuple(kinds[i] for i in sorted(kinds, key=lambda i: -stats[i, cv2.CC_STAT_AREA]))
    if not strokes and len(small) < 2:
        return CellWriting(False, 0.0, 0.0, order), mask
    keep = np.zeros(n, bool)
    keep[strokes + small] = True
    inside = keep[labels]
    mask[y0:y1, x0:x1][inside] = 255
    contrast = float(np.percentile(dark[inside], 90))
    return CellWriting(True, float(inside.mean()), contrast, order), mask


def _dark_regions(gray: np.ndarray, ink: np.ndarray, paper: float, size: int, h: int,
                  config: CellsConfig) -> np.ndarray | None:
    """Where the crop is a dark region rather than paper with strokes on it (1.0) or not (0.0): a solid
    area darker than half the paper's level, `region_share` of `size` thick and a row's height long (a
    shadow a bilevel scan made black), with `size` around it (its ragged edge); and where specks cover
    `dense_share` of the paper around (a shadow broken into dots). None when there is neither."""
    solid = (gray < paper / 2).astype(np.uint8)
    out = None
    if solid.any():
        side = max(3, int(round(size * config.region_share)))
        square = cv2.getStructuringElement(cv2.MORPH_RECT, (side, side))
        regions = cv2.morphologyEx(solid, cv2.MORPH_OPEN, square)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(regions, connectivity=8)
        wide = stats[:, cv2.CC_STAT_WIDTH] >= h  # a shade spreads along the row; a bold letter's blot does not
        wide[0] = False
        regions = wide[labels].astype(np.uint8)
        if regions.any():
            out = cv2.dilate(regions, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * size + 1, 2 * size + 1)))
            out = out.astype(np.float32)
    # specks around: a shadow broken into dots by binarisation leaves a mass of them, writing few
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    tiny = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) < max(2, h * config.mark_px)
    tiny[0] = False
    win = max(3, int(round(h * config.dense_px)) | 1)
    density = cv2.boxFilter(tiny[labels].astype(np.float32), -1, (win, win), borderType=cv2.BORDER_REFLECT)
    dense = (density > config.dense_share).astype(np.float32)
    if dense.any():
        out = dense if out is None else np.maximum(out, dense)
    return out


def _stroke_shaped(bw: int, bh: int, area: int) -> bool:
    """A small mark drawn with a pen (a dash, a ditto stroke), not a blot: longer than it is thick."""
    length = max(bw, bh)
    return length * length >= 2.5 * area or max(bw, bh) >= 2.5 * min(bw, bh)


@dataclass(frozen=True)
class _Bar:
    """A thin straight mark: its centre, length along it, direction and box in the cell."""

    label: int
    cx: float
    cy: float
    length: float
    angle: float  # degrees from the row's direction, 0..90
    slope: float  # dy/dx along it (dx/dy for an upright one)
    x0: int
    y0: int
    x1: int
    y1: int
    light: bool  # lighter than fold_contrast below its paper


def _holes(piece: np.ndarray) -> int:
    """How many holes (pieces of paper enclosed by the mark) it has."""
    paper = np.pad((~piece).astype(np.uint8), 1, constant_values=1)
    n, labels = cv2.connectedComponents(paper, connectivity=4)
    return max(0, n - 2)  # the background outside, label 0 the mark itself


def _thickness(piece: np.ndarray) -> float:
    """A mark's stroke width: twice the distance from its inside to its edge, on its thicker parts."""
    dist = cv2.distanceTransform(np.pad(piece.astype(np.uint8), 1), cv2.DIST_L2, 3)
    return 2.0 * float(np.percentile(dist[dist > 0], 75))


def _bar(label: int, piece: np.ndarray, bx: int, by: int, h: int, config: CellsConfig,
         contrast: float) -> _Bar | None:
    """The mark as a thin straight bar, or None when it is not one."""
    ys, xs = np.nonzero(piece)
    if len(xs) < 3:
        return None
    pts = np.stack([xs, ys], 1).astype(np.float32)
    mean = pts.mean(axis=0)
    evals, evecs = np.linalg.eigh(np.cov((pts - mean).T) + np.eye(2) * 1e-6)
    major = evecs[:, 1]
    length = float(np.sqrt(12 * evals[1]))  # of a straight bar of that spread
    thickness = float(len(xs) / max(length, 1.0))
    spread = float(np.sqrt(evals[0]))  # across the bar: thickness and waviness
    max_thick = max(2.0, h * config.line_thickness)
    bh, bw = piece.shape
    flat = (bh <= max_thick + 1 and bw >= bh) or (bw <= max_thick + 1 and bh >= bw)
    if not flat and (thickness > max_thick or spread > max(1.0, max_thick / 2) or length < 3 * thickness):
        return None
    angle = abs(float(np.degrees(np.arctan2(major[1], major[0])))) % 180
    angle = min(angle, 180 - angle)
    if angle <= 45:
        slope = float(major[1] / major[0]) if abs(major[0]) > 1e-6 else 0.0
    else:
        slope = float(major[0] / major[1]) if abs(major[1]) > 1e-6 else 0.0
    light = contrast < config.fold_contrast
    return _Bar(label, bx + float(mean[0]), by + float(mean[1]), max(length, float(max(bw, bh))), angle, slope,
                bx, by, bx + bw, by + bh, light)


def _line_kind(bar: _Bar, cw: int, ch: int, h: int, config: CellsConfig) -> str | None:
    """LINE for a ruled-line fragment (along the cell's edge, near it: a line doubled or offset, a
    printer's dash), FOLD for a mark across the whole cell's height; else None."""
    edge = h * config.line_edge
    if bar.angle <= config.line_degrees and min(bar.cy, ch - bar.cy) <= edge:
        return LINE
    if bar.angle >= 90 - config.line_degrees:
        if min(bar.cx, cw - bar.cx) <= edge:
            return LINE
        if bar.y1 - bar.y0 >= 0.9 * ch:
            return FOLD  # upright across the whole cell: a fold or a crease, no pen stroke
    return None


def _creases(bars: list[_Bar], cw: int, ch: int, h: int, config: CellsConfig) -> list[int]:
    """The light thin bars that line up into a crease: along the row over `fold_px` of the row height
    (a strike or a dash is darker, or shorter), or upright over 0.7 of the cell's height."""
    out: list[int] = []
    for upright in (False, True):
        group = [b for b in bars if (b.angle >= 90 - config.line_degrees) == upright
                 and (b.angle <= config.line_degrees or upright)]
        # in the bar's own frame: u along it, v across
        items = sorted(((b.cy, b.cx, b.y0, b.y1, b) if upright else (b.cx, b.cy, b.x0, b.x1, b)) for b in group)
        chains: list[list[tuple[float, float, int, int, _Bar]]] = []
        for it in items:
            for chain in chains:
                u, v = it[0], it[1]
                last = chain[-1]
                slope = np.polyfit([c[0] for c in chain], [c[1] for c in chain], 1)[0] if len(chain) > 1 \
                    else last[4].slope
                if abs(v - (last[1] + slope * (u - last[0]))) <= max(2.0, 0.04 * h) + 0.05 * abs(u - last[0]):
                    chain.append(it)
                    break
            else:
                chains.append([it])
        need = 0.7 * ch if upright else h * config.fold_px
        for chain in chains:
            if max(c[3] for c in chain) - min(c[2] for c in chain) >= need:
                out += [c[4].label for c in chain]
    return out
