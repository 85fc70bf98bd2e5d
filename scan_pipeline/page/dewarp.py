"""Straighten a bowed sheet: rows that bend across a photo become straight again (issue #23).

A sheet photographed curled or bowed keeps its ruled lines parallel, but each of them bends the
same way across the page: a line's height varies with x. The page's horizontal lines are cut into
vertical strips; each strip's profile of line ink (by height) is matched with its neighbour's,
which gives how far the lines move from strip to strip; a parabola through those moves is the
bend `dy(x)`, and the page is resampled with it (`y -> y + dy(x)`). Strips are matched with their
neighbours, never with a far strip, so a bend of up to a few rows' height is followed without
mistaking one row's line for the next.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from scan_pipeline.core.records import FlatPage

STRIPS = 12
MIN_BEND_PX = 2.5  # a smaller bend is left alone: it moves no line out of its row
MAX_STEP = 0.006  # of the page height: the largest move of the lines from one strip to the next
MIN_STRIPS = 6  # strips with enough line ink to fit the bend through


def _best_shift(a: np.ndarray, b: np.ndarray, reach: int) -> tuple[float, float]:
    """How far `b` is `a` moved down (sub-pixel), and how well they match then (0..1)."""
    a = a - a.mean()
    b = b - b.mean()
    norm = float(np.sqrt((a * a).sum() * (b * b).sum()))
    if norm <= 0:
        return 0.0, 0.0
    n = len(a)
    scores = np.array([float((a[max(0, -s):n - max(0, s)] * b[max(0, s):n - max(0, -s)]).sum())
                       for s in range(-reach, reach + 1)]) / norm
    k = int(np.argmax(scores))
    shift = float(k - reach)
    if 0 < k < len(scores) - 1:  # a parabola through the peak and its neighbours
        lo, mid, hi = scores[k - 1], scores[k], scores[k + 1]
        denom = lo - 2 * mid + hi
        if denom < 0:
            shift += 0.5 * (lo - hi) / denom
    return shift, float(scores[k])


def bend_of(horizontal: np.ndarray) -> np.ndarray | None:
    """The coefficients (numpy.polyval, of x in pixels) of the lines' height change across the page,
    or None when the lines are straight or too few to tell."""
    h, w = horizontal.shape
    edges = np.linspace(0, w, STRIPS + 1).astype(int)
    profiles = [cv2.GaussianBlur(horizontal[:, a:b].sum(axis=1, dtype=np.float32)[:, None], (1, 0), 2.0)[:, 0]
                for a, b in zip(edges[:-1], edges[1:], strict=True)]
    ink = np.array([float(p.sum()) for p in profiles])
    usable = ink >= 0.25 * ink.max() if ink.max() > 0 else np.zeros(STRIPS, bool)
    if usable.sum() < MIN_STRIPS:
        return None
    reach = max(3, int(MAX_STEP * h))
    offsets = np.full(STRIPS, np.nan)
    start = int(np.flatnonzero(usable)[usable.sum() // 2])
    offsets[start] = 0.0
    for step in (1, -1):
        last, k = start, start + step
        while 0 <= k < STRIPS:
            if usable[k]:
                shift, match = _best_shift(profiles[last], profiles[k], reach * abs(k - last))
                if match < 0.5:
                    break  # the lines do not carry on into this strip: stop following them this way
                offsets[k] = offsets[last] + shift
                last = k
            k += step
    known = ~np.isnan(offsets)
    if known.sum() < MIN_STRIPS:
        return None
    x = (edges[:-1] + edges[1:]) / 2.0
    coef = np.polyfit(x[known], offsets[known], 2)
    curve = np.polyval(coef, np.arange(w, dtype=np.float64))
    if curve.max() - curve.min() < MIN_BEND_PX:
        return None
    coef[-1] -= float(np.polyval(coef, w / 2.0))  # the page's middle column keeps its height
    return coef


def unbend(flat: FlatPage, horizontal: np.ndarray) -> FlatPage | None:
    """The page with its rows straightened, its bend kept in `FlatPage.bend`; None when straight."""
    coef = bend_of(horizontal)
    if coef is None:
        return None
    h, w = flat.pixels.shape
    dy = np.polyval(coef, np.arange(w, dtype=np.float64)).astype(np.float32)
    # the maps built in float32 from the start: np.mgrid's int64 grids cost ten times the remap
    xx = np.empty((h, w), np.float32)
    xx[:] = np.arange(w, dtype=np.float32)
    yy = np.arange(h, dtype=np.float32)[:, None] + dy[None, :]
    pixels = cv2.remap(flat.pixels, xx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=255)
    return replace(flat, pixels=pixels, bend=tuple(float(c) for c in coef))


def to_unbent(points: np.ndarray, bend: tuple[float, ...]) -> np.ndarray:
    """Points of a straightened page where they were on the page before (`unbend`'s inverse map)."""
    if not bend:
        return points
    out = np.array(points, np.float64, copy=True)
    out[:, 1] += np.polyval(np.array(bend), out[:, 0])
    return out
