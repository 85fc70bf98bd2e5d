"""A photo straightened by the grid's own printed frame, where the sheet's outline misleads.

On a cluttered table the outline of the sheet is lost: another paper beside it, a shadow making
a corner as dark as the table, the sheet touching the photo's edge. The grid's frame is printed
on the sheet itself: its ruled lines are thin dark lines (what a black-hat filter keeps, while it
drops the step of a page edge or a shadow's edge), straight under perspective, and the outermost
long ones of the grid's connected structure are its frame. Warping that quadrilateral to a
rectangle straightens the whole sheet's plane, even when the frame found stops short (a crease or
a shadow cutting the grid in two): the rows beyond it come out straight as well.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from scan_pipeline.core.records import FlatPage, PageImage
from scan_pipeline.page.grid import page_masks
from scan_pipeline.page.load import as_gray
from scan_pipeline.page.normalise import PHOTO_DPI, flatten_light
from scan_pipeline.page.pixels import runs

Line = tuple[np.ndarray, float]  # unit normal n and offset r: the points p with n . p = r

WORK_SIDE = 1600  # pixels: the longer side of the copy the frame is looked for on
MIN_SIDE_SHARE = 0.3  # of the photo's width: a grid frame narrower than this is not the grid
MIN_COVERAGE = 0.6  # of a frame's side drawn between the other two sides
WEAK_SHARE = 0.6  # of Otsu's threshold on the black-hat: a faint stroke kept if it joins a strong one
RULED_SOLID = 0.85  # of a ruled line's length drawn (print has gaps between letters and words)


def _meet(a: Line, b: Line) -> np.ndarray | None:
    m = np.array([a[0], b[0]])
    if abs(np.linalg.det(m)) < 1e-6:
        return None
    point: np.ndarray = np.linalg.solve(m, [a[1], b[1]])
    return point


def _refit(points: np.ndarray, line: Line, tolerance: float) -> Line:
    """The line fitted to the points within `tolerance` of a Hough line: to the pixel."""
    normal, offset = line
    near = points[np.abs(points @ normal - offset) < tolerance]
    if len(near) < 20:
        return line
    vx, vy, x0, y0 = cv2.fitLine(near.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
    fitted = np.array([-vy, vx], np.float64)
    if fitted @ normal < 0:
        fitted = -fitted
    return fitted, float(fitted @ [x0, y0])


def _hough(mask: np.ndarray, votes: int, low_deg: float, high_deg: float) -> list[Line]:
    found = cv2.HoughLines(mask, 1, np.radians(0.5), threshold=max(10, votes),
                           min_theta=np.radians(low_deg), max_theta=np.radians(high_deg))
    lines: list[Line] = []
    for rho, theta in ([] if found is None else found[:, 0]):
        normal = np.array([np.cos(theta), np.sin(theta)])
        if normal[0] < -1e-9:  # one direction for each family: sorting by position then holds
            normal, rho = -normal, -rho
        lines.append((normal, float(rho)))
    return lines


def line_inks(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """255 on thin dark strokes (ruled lines, print, writing), not on the edges of dark regions:
    the strong strokes, and with them the faint ones joined to them (a line in a shadow, blurred)."""
    flat = flatten_light(gray, sharp=True)
    k = max(5, int(round(gray.shape[1] / 150))) | 1
    hat = cv2.morphologyEx(flat, cv2.MORPH_BLACKHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    otsu, strong = cv2.threshold(hat, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    n, labels = cv2.connectedComponents((hat > WEAK_SHARE * otsu).astype(np.uint8), connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[strong > 0])] = True
    keep[0] = False
    return strong, (keep[labels] * 255).astype(np.uint8)


def _coverage(mask: np.ndarray, a: np.ndarray | None, b: np.ndarray | None) -> float:
    """The share of the segment a-b lying on the mask."""
    if a is None or b is None:
        return 0.0
    n = int(np.linalg.norm(b - a))
    if n < 10:
        return 0.0
    p = np.round(a[None] + (b - a)[None] * np.linspace(0, 1, n)[:, None]).astype(int)
    inside = (p[:, 0] >= 0) & (p[:, 0] < mask.shape[1]) & (p[:, 1] >= 0) & (p[:, 1] < mask.shape[0])
    return float(np.count_nonzero(mask[p[inside, 1], p[inside, 0]])) / n


def _outermost(lines: list[Line], across: tuple[Line, Line], mask: np.ndarray, from_end: bool) -> Line | None:
    """The outermost of `lines` drawn along most of its length between the two lines `across`."""
    for line in (reversed(lines) if from_end else lines):
        if _coverage(mask, _meet(line, across[0]), _meet(line, across[1])) >= MIN_COVERAGE:
            return line
    return None


def _distinct(lines: list[Line], key: Callable[[Line], float], apart: float) -> list[Line]:
    """Lines by position, one for each printed line (Hough gives several a line)."""
    out: list[Line] = []
    for line in sorted(lines, key=key):
        if not out or key(line) - key(out[-1]) > apart:
            out.append(line)
    return out


def _outer_line(points: np.ndarray, outward: int, tolerance: float) -> Line | None:
    """The line through the outermost of `points` (ends of ruled lines; `outward` -1 for a left
    side, +1 for a right one), its normal along +x: an end well inside it is a line whose part
    near the side is lost (a shadow, a smear), no evidence of where the side runs."""
    kept = points
    for _ in range(4):
        if len(kept) < max(3, 0.4 * len(points)):
            return None
        vx, vy, x0, y0 = cv2.fitLine(kept.astype(np.float32), cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        normal = np.array([vy, -vx], np.float64) if vy >= 0 else np.array([-vy, vx], np.float64)
        offset = float(normal @ [x0, y0])
        inside = (kept @ normal - offset) * outward < -tolerance
        if not inside.any():
            return normal, offset
        kept = kept[~inside]
    return None


def _by_ends(horizontal: list[Line], near: np.ndarray, tolerance: float) -> tuple[Line, Line, Line, Line] | None:
    """The grid's frame (top, bottom, left, right) from its rows' ruled lines alone: a photo shaken
    across the vertical lines smears them away, while the rows' lines still start and stop on them.

    Ruled lines are solid and as long as each other (print has gaps, a crease or a table's edge
    runs on past them) and follow each other a row apart (a bold title as long as the grid lies
    paragraphs above it)."""
    bh, bw = near.shape
    xs = np.arange(bw)
    ruled = []
    for line in horizontal:
        normal, offset = line
        ys = np.round((offset - normal[0] * xs) / normal[1]).astype(int)
        inside = (ys >= 0) & (ys < bh)
        on = np.zeros(bw, bool)
        on[inside] = near[ys[inside], xs[inside]] > 0
        spans = runs(on, max(3, bw // 12))  # gaps: a crease, a shadow's edge, a smeared crossing
        if spans:
            a, b = max(spans, key=lambda span: span[1] - span[0])
            if on[a:b].mean() >= RULED_SOLID:
                ruled.append((line, (a, ys[a], b - 1, ys[b - 1])))
    if len(ruled) < 3:
        return None
    length = np.array([e[2] - e[0] for _, e in ruled], np.float64)
    ruled = [r for r, n in zip(ruled, length) if abs(n - np.median(length)) <= 0.15 * np.median(length)]
    if len(ruled) < 3:
        return None
    ruled.sort(key=lambda r: (r[1][1] + r[1][3]) / 2)
    rows = [ruled[i] for i in _evenly_spaced([(e[1] + e[3]) / 2 for _, e in ruled], 2 * tolerance)]
    if len(rows) < 3:
        return None
    ends = np.array([e for _, e in rows], np.float64)
    left, right = _outer_line(ends[:, :2], -1, tolerance), _outer_line(ends[:, 2:], 1, tolerance)
    return None if left is None or right is None else (rows[0][0], rows[-1][0], left, right)


def _evenly_spaced(ys: list[float], least: float) -> list[int]:
    """The indices of the `ys` (sorted) on the longest run of steps of one pitch, a line missing
    here and there: the rows of a grid, not a strike-out or a crease between two of them, nor the
    lines of a paragraph (closer, and cut into paragraphs) or a title over the grid."""
    y = np.asarray(ys, np.float64)
    best: list[int] = []
    for i in range(len(y) - 1):
        for j in range(i + 1, min(i + 3, len(y))):  # the next line, or the one after a double
            pitch = float(y[j] - y[i])
            if pitch < least:
                continue
            hits, at, missed = [i], float(y[i]), 0
            while missed <= 1:
                at += pitch
                k = int(np.argmin(np.abs(y - at)))
                if abs(y[k] - at) <= 0.15 * pitch and k > hits[-1]:
                    hits.append(k)
                    at, missed = float(y[k]), 0  # followed: a bowed sheet's rows drift
                else:
                    missed += 1
            # the most rows; of as many, the longest (a double pitch skips every other row)
            if (len(hits), y[hits[-1]] - y[i]) > (len(best), y[best[-1]] - y[best[0]] if best else 0.0):
                best = hits
    return best if len(best) >= 3 else []


def _frame_of(part: np.ndarray, near: np.ndarray) -> np.ndarray | None:
    """The frame of one structure of lines (its own pixels), checked on `near` (all lines, widened)."""
    bh, bw = part.shape
    # a ruled line runs across at least half the structure; writing and print do not
    horizontal = _hough(part, bw // 2, 65, 115)
    vertical = _hough(part, bh // 2, 0, 25) + _hough(part, bh // 2, 155, 180)
    cx, cy = bw / 2, bh / 2
    horizontal = _distinct(horizontal, lambda line: (line[1] - cx * line[0][0]) / line[0][1], 3)
    vertical = _distinct(vertical, lambda line: (line[1] - cy * line[0][1]) / line[0][0], 3)
    if len(horizontal) < 2:
        return None
    ys, xs = np.nonzero(part)
    points = np.stack([xs, ys], axis=1).astype(np.float64)
    tolerance = max(3.0, 0.006 * max(bw, bh))
    if len(vertical) < 2:  # the sides smeared (motion blur along them): the ruled lines' ends give them
        by_ends = _by_ends([_refit(points, line, tolerance) for line in horizontal], near, tolerance)
        if by_ends is None:
            return None
        top, bottom, left, right = by_ends
    else:
        top, bottom, left, right = horizontal[0], horizontal[-1], vertical[0], vertical[-1]
        for _ in range(2):  # the sides checked against each other: a stray long stroke is no side
            sides = (_outermost(horizontal, (left, right), near, False),
                     _outermost(horizontal, (left, right), near, True),
                     _outermost(vertical, (top, bottom), near, False), _outermost(vertical, (top, bottom), near, True))
            if any(side is None for side in sides) or sides[0] is sides[1] or sides[2] is sides[3]:
                return None
            top, bottom, left, right = sides  # type: ignore[assignment]
        top, bottom, left, right = (_refit(points, line, tolerance) for line in (top, bottom, left, right))
    corners = [_meet(top, left), _meet(top, right), _meet(bottom, right), _meet(bottom, left)]
    if any(c is None for c in corners):
        return None
    return np.array(corners, np.float32)


def find_grid_frame(gray: np.ndarray) -> np.ndarray | None:
    """The corners (top-left, top-right, bottom-right, bottom-left) of the grid's printed frame
    on a photo, or None. The largest frame found over the biggest structures of thin lines, with
    the strong strokes alone and with the faint ones too (each loses some photos)."""
    scale = min(1.0, WORK_SIDE / max(gray.shape))
    if scale < 1.0:  # a phone's 12 megapixels: the frame needs no finer
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = gray.shape
    inks = line_inks(gray)
    near = cv2.dilate(inks[1], np.ones((3, 3), np.uint8))
    # a crease shifts the lines below it by a few pixels: joined again before taking structures
    k = max(3, int(round(w / 200))) | 1
    best: tuple[float, np.ndarray] | None = None
    for ink in inks:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(ink, np.ones((k, k), np.uint8)),
                                                               connectivity=8)
        for i in np.argsort(-stats[1:, cv2.CC_STAT_AREA])[:4] + 1:
            x, y, bw, bh, _ = (int(v) for v in stats[i])
            if bw < MIN_SIDE_SHARE * w or bh < 0.06 * h:
                continue
            part = ((labels[y:y + bh, x:x + bw] == i) & (ink[y:y + bh, x:x + bw] > 0)).astype(np.uint8) * 255
            frame = _frame_of(part, near[y:y + bh, x:x + bw])
            if frame is None:
                continue
            quad = frame + np.array([x, y], np.float32)
            if not _plausible(quad, w):
                continue
            area = float(cv2.contourArea(quad))
            if best is None or area > best[0]:
                best = (area, quad)
    return None if best is None else best[1] / scale


def _plausible(quad: np.ndarray, width: int) -> bool:
    """A grid seen in perspective: convex, wide enough, opposite sides of similar length."""
    if not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
        return False
    sides = [float(np.linalg.norm(quad[(i + 1) % 4] - quad[i])) for i in range(4)]
    if sides[0] < MIN_SIDE_SHARE * width or min(sides) < 20:
        return False
    return all(0.65 < sides[i] / sides[i + 2] < 1.55 for i in (0, 1))


SIDE_PAD_MM = 3.0  # kept beside the frame found: a crease shifts the lines below it a little
EDGE_STEP = 6.0  # gray levels a pixel, along most of an edge: the least step taken for the paper's


def _farthest_step(profile: np.ndarray, lo: int, hi: int, upwards: bool) -> int | None:
    """The step of `profile` between lo and hi farthest from the grid (towards lo if `upwards`)."""
    lo, hi = max(lo, 0), min(hi, len(profile))
    strong = np.flatnonzero(np.nan_to_num(np.abs(profile[lo:hi])) >= EDGE_STEP) + lo
    if not len(strong):
        return None
    return int(strong[0] if upwards else strong[-1])


def _median_step(small: np.ndarray, inside: np.ndarray, axis: int) -> np.ndarray:
    """For each row (axis 0: steps downwards) or column (1: rightwards), the median step of the
    light over the photo's part of it; NaN where the photo shows less than half of it."""
    step = cv2.Sobel(small, cv2.CV_32F, axis, 1 - axis, ksize=3) / 8
    along = 1 - axis
    out = np.full(small.shape[axis], np.nan, np.float32)
    shown = inside.mean(axis=along) > 0.5
    for i in np.flatnonzero(shown):
        line = step[i] if axis == 0 else step[:, i]
        seen = inside[i] if axis == 0 else inside[:, i]
        out[i] = np.median(line[seen])
    return out


def _paper_bounds(warped: np.ndarray, seen: np.ndarray, frame_top: int, frame_bottom: int,
                  ) -> tuple[int, int, int, int]:
    """The sheet's top, bottom, left and right on the canvas: beyond them, the table.

    Straightened, the sheet's edges run nearly along the canvas: each is where the light steps
    the same way along most of its length (a table's wood grain steps both ways; a shadow's edge
    or a crease lies inside the sheet, nearer the grid: the step farthest out is the edge)."""
    f = 4
    small = cv2.GaussianBlur(cv2.resize(warped, None, fx=1 / f, fy=1 / f, interpolation=cv2.INTER_AREA)
                             .astype(np.float32), (0, 0), 1.0)
    # what the photo shows: the canvas beyond it is blank fill, whose step is no edge of the sheet
    inside = cv2.erode(cv2.resize(seen, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST),
                       np.ones((5, 5), np.uint8)) > 0
    rows, cols = _median_step(small, inside, 0), _median_step(small, inside, 1)
    h, w = small.shape
    top = _farthest_step(rows, 1, frame_top // f - 2, upwards=True)
    bottom = _farthest_step(rows, frame_bottom // f + 3, h - 1, upwards=False)
    side = max(3, w // 25)  # the frame puts the sheet's sides at the canvas's: looked for near them
    left = _farthest_step(cols, 1, side, upwards=True)
    right = _farthest_step(cols, w - side, w - 1, upwards=False)
    return (0 if top is None else (top + 1) * f, warped.shape[0] if bottom is None else bottom * f,
            0 if left is None else (left + 1) * f, warped.shape[1] if right is None else right * f)


GAP_MM = 4.0  # a printed line broken for less than this (a crease, a shadow's edge) goes on


def _line_span(vertical: np.ndarray, x: int, y0: int, y1: int, pad: int) -> tuple[int, int]:
    """How far up and down from [y0, y1] the vertical line near column x runs, gaps bridged."""
    band = vertical[:, max(0, x - pad // 2):x + pad // 2 + 1]
    if band.size == 0:
        return y0, y1
    dark = band.max(axis=1) > 0
    dark[max(0, y0):y1 + 1] = True  # the frame found is the line's, whatever the mask says there
    for start, end in runs(dark, join=int(round(GAP_MM * PHOTO_DPI / 25.4))):
        if start <= max(0, y0) < end:
            return min(start, y0), max(end - 1, y1)
    return y0, y1


def frame_page(page: PageImage, frame: np.ndarray, paper_mm: tuple[float, float],
               margin_mm: float) -> FlatPage:
    """The photo warped so that the grid's frame is an upright rectangle as wide as the printed
    grid (the paper less its margins), on a canvas of the sheet's size around it.

    The frame's height is taken from its sides' lengths in the photo: under perspective a little
    off, which stretches the rows a few percent and does not matter to the grid search (it
    measures rows in pixels, not millimetres)."""
    gray = as_gray(page.pixels)
    tl, tr, br, bl = frame.astype(np.float64)
    px_mm = PHOTO_DPI / 25.4
    width = (paper_mm[0] - 2 * margin_mm) * px_mm
    height = width * (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / (
        np.linalg.norm(tr - tl) + np.linalg.norm(br - bl))
    x0 = margin_mm * px_mm
    rect = np.array([[x0, 0], [x0 + width, 0], [x0 + width, height], [x0, height]], np.float64)
    H = cv2.getPerspectiveTransform(frame.astype(np.float32), rect.astype(np.float32))
    # the canvas: the paper's width, and the photo's extent above and below the frame, at most a
    # sheet's height each way (the grid may sit anywhere on its page)
    h, w = gray.shape
    seen = cv2.perspectiveTransform(np.array([[[0, 0], [w, 0], [w, h], [0, h]]], np.float64), H)[0]
    sheet = paper_mm[1] * px_mm
    top = float(np.clip(seen[:, 1].min(), -(sheet - height), 0))
    bottom = float(np.clip(seen[:, 1].max(), height, sheet))
    shift = np.array([[1, 0, 0], [0, 1, -top], [0, 0, 1.0]])
    H = shift @ H
    size = (int(round(paper_mm[0] * px_mm)), int(round(bottom - top)))
    warped = cv2.warpPerspective(gray, H, size, flags=cv2.INTER_CUBIC, borderValue=255)
    seen_mask = cv2.warpPerspective(np.full(gray.shape, 255, np.uint8), H, size, flags=cv2.INTER_NEAREST)
    y_top, y_bottom, x_left, x_right = _paper_bounds(warped, seen_mask, int(round(-top)), int(round(height - top)))
    # beside the grid nothing is read: what lies there (a thumb, the sheet's edge, the table) is
    # whitened rather than risk its lines joining the grid's; after the light is flattened, so that
    # the whitened parts meet white paper without a step
    pad = int(round(SIDE_PAD_MM * px_mm))
    x_left, x_right = max(x_left, int(x0) - pad), min(x_right, int(x0 + width) + pad)
    warped = flatten_light(warped, sharp=True)
    # above and below the grid nothing is read either: the grid ends where its outer lines end
    # (they may go on past the frame found, when a crease or a shadow's edge stopped it short)
    vertical = page_masks(warped).vertical
    spans = [_line_span(vertical, int(round(x)), int(round(-top)), int(round(height - top)), pad)
             for x in (x0, x0 + width)]
    y_top = max(y_top, min(a for a, _ in spans) - pad)
    y_bottom = min(y_bottom, max(b for _, b in spans) + pad)
    warped[:max(0, y_top)] = 255
    warped[y_bottom:] = 255
    warped[:, :max(0, x_left)] = 255
    warped[:, x_right:] = 255
    return FlatPage(ref=page.ref, pixels=warped, dpi=PHOTO_DPI, rotation=0, skew_deg=0.0,
                    transform=tuple(tuple(float(v) for v in row) for row in H), photo=True)
