"""Signature state of a row: signed, empty, or struck out (a line or a cross through the row).

Struck: a thin straight stroke runs, nearly unbroken, along most of the row (name to signature).
A stroke that long at the row's height can only be nearly horizontal, so the row's ink is sheared
by each small angle and searched for a long horizontal run; handwriting does not make one (its
strokes are short, and where letters touch they make a tall band, not a thin line). Otherwise the
signature cell's ink decides between signed and empty (ink that spills over the cell's lines still
counts: the ink is measured inside the cell, and the spill is not a long thin line).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from scan_pipeline.core.config import SignatureConfig
from scan_pipeline.core.records import SignatureState

_WORK_WIDTH = 480  # the row is searched at this width (px): fast, and a strike stays a line


def strike_run(row_ink: np.ndarray, config: SignatureConfig) -> float:
    """The longest thin straight run of ink across the row, as a share of the row's width."""
    h, w = row_ink.shape[:2]
    if w < 8 or h < 2 or not row_ink.any():
        return 0.0
    scale = min(1.0, _WORK_WIDTH / w)
    sw, sh = max(8, int(round(w * scale))), max(2, int(round(h * scale)))
    small = (cv2.resize(row_ink, (sw, sh), interpolation=cv2.INTER_AREA) > 40).astype(np.uint8)
    gap = max(2, int(round(sw * config.strike_gap)))
    closer = cv2.getStructuringElement(cv2.MORPH_RECT, (gap, 1))
    # shearing moves ink up and down only: a run that long needs as long a run of inked columns
    columns = cv2.morphologyEx(small.max(axis=0)[None], cv2.MORPH_CLOSE, closer)[0]
    if _longest_run(columns) < sw * config.strike_length * 0.9:
        return 0.0
    # the steepest a stroke of the minimum length can be and still fit the row
    limit = min(config.strike_max_degrees, math.degrees(math.atan2(sh, sw * config.strike_length)))
    steps = max(1, int(math.ceil(sw * math.tan(math.radians(limit)) / 1.5)))
    thick = max(1, int(round(sh * config.strike_thickness)))
    best = 0.0
    for angle in np.linspace(-limit, limit, 2 * steps + 1):
        shear = math.tan(math.radians(angle))
        m = np.array([[1, 0, 0], [-shear, 1, shear * sw / 2]], np.float32)
        sheared = cv2.warpAffine(small, m, (sw, sh), flags=cv2.INTER_NEAREST, borderValue=0)
        rows = cv2.dilate(sheared, np.ones((2, 1), np.uint8))  # one pixel of slack across the line
        rows = cv2.morphologyEx(rows, cv2.MORPH_CLOSE, closer)
        for y in np.flatnonzero(rows.sum(axis=1) >= sw * max(best, config.strike_length) * 0.9):
            run = _longest_run(rows[y])
            if run < sw * max(best, config.strike_length * 0.9):
                continue
            x0, x1 = run_span(rows[y])
            # thin: little ink a few pixels above and below the run (handwriting is a tall band)
            above = sheared[max(0, y - thick - 1):max(0, y - thick + 1), x0:x1]
            below = sheared[y + thick:y + thick + 2, x0:x1]
            around = max(above.mean() if above.size else 0.0, below.mean() if below.size else 0.0)
            if around <= config.strike_max_band:
                best = max(best, run / sw)
    return best


def _longest_run(line: np.ndarray) -> int:
    x0, x1 = run_span(line)
    return x1 - x0


def run_span(line: np.ndarray) -> tuple[int, int]:
    """Start and end (exclusive) of the longest run of non-zero values."""
    padded = np.r_[0, (line > 0).astype(np.int8), 0]
    edges = np.flatnonzero(np.diff(padded))
    if len(edges) < 2:
        return 0, 0
    starts, ends = edges[::2], edges[1::2]
    i = int(np.argmax(ends - starts))
    return int(starts[i]), int(ends[i])


def is_struck(row_ink: np.ndarray, config: SignatureConfig) -> bool:
    """A long, thin, straight stroke across the written part of the row (ruled lines already removed)."""
    return strike_run(row_ink, config) >= config.strike_length


def signature_state(signature_ink: float, row_ink: np.ndarray, config: SignatureConfig) -> SignatureState:
    """`signature_ink`: the share of ink in the signature cell; `row_ink`: the row's ink mask (name
    cell to signature cell, ruled lines removed)."""
    if is_struck(row_ink, config):
        return "struck"
    return "signed" if signature_ink >= config.signed_ink else "empty"
