"""Handwritten digits of a postal code cell: segmentation into candidate pieces and a digit model.

A postal cell is cut into *atoms*: connected pieces of ink (fragments of one digit joined), with
wide pieces (touching digits) sliced at the minima of their vertical projection. A *segment* is a
run of consecutive atoms; every plausible segment is scored by a small CNN with 11 classes, the ten
digits and "not one digit" (a half, two digits, a crossed-out digit, a speck). The lexicon decoder
in `postal` then picks the path through the atoms and the real postal code that best explain the
ink together, so a wrong cut is never forced: segmentation proposes, the code list decides.

The model (`data/digit_model.npz`: the ONNX graph, its calibration and facts about its training)
is built by scan_pipeline.training.train_digits from the MNIST training part only, quantized to int8; it runs
with onnxruntime, one thread.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import cv2
import numpy as np

from scan_pipeline.core.errors import MissingDependencyError
from scan_pipeline.page.pixels import runs

MODEL_FILE = "digit_model.npz"
SIZE = 28  # classifier input, pixels
DIGIT_PX = 20  # a digit as tall as the text line is scaled to this height, as in MNIST
MAX_PX = 26  # no segment is drawn larger than this
GARBAGE = 10  # class index of "not one digit"
N_CLASSES = 11
MAX_ATOMS_PER_SEGMENT = 4
MAX_SEGMENT_WIDTH = 1.35  # in text heights
MAX_INNER_GAP = 0.45  # a blank wider than this share of the text height is never inside one digit
LOOP_MIN_PX = 6  # enclosed paper smaller than this (pixels, or share of the squared text height) is a pinhole
LOOP_MIN_SHARE = 0.004


@dataclass(frozen=True)
class Segmentation:
    """Candidate pieces of a postal cell. Atoms are ordered left to right."""

    atoms: np.ndarray  # (H, W) int16 atom index per pixel, -1 for no ink
    atom_boxes: tuple[tuple[int, int, int, int], ...]  # x0, y0, x1, y1 (exclusive) per atom
    segments: tuple[tuple[int, int], ...]  # (i, j): atoms i..j-1
    patches: np.ndarray  # (S, SIZE, SIZE) float32 0..1, one per segment
    line_height: float  # estimated height of the digits, pixels

    @property
    def n_atoms(self) -> int:
        return len(self.atom_boxes)


# --- preprocessing -----------------------------------------------------------------------------------

def ink_mask(crop: np.ndarray) -> np.ndarray:
    """Binary ink (uint8 0/1) of a gray crop, dark ink on light paper (or a bilevel crop)."""
    gray = crop if crop.ndim == 2 else cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    gray = gray.astype(np.uint8)
    paper, dark = (float(v) for v in np.percentile(gray, [75, 1]))  # one partition for both
    if paper - dark < 40:  # hardly any contrast: only ink well darker than paper counts
        return (gray < paper - 60).astype(np.uint8)
    otsu, _ = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    threshold = min(max(otsu, dark + 0.35 * (paper - dark)), dark + 0.7 * (paper - dark))
    return (gray < threshold).astype(np.uint8)


def _remove_long_lines(ink: np.ndarray, text_h: float) -> np.ndarray:
    """Strokes far longer than a digit: a strike-through line, a printed box edge. Where a digit's
    stroke crosses the removed line, the crossing is put back."""
    h, w = ink.shape
    out = ink.copy()
    horiz = int(max(12, 2.6 * text_h))
    if w > horiz:
        thick = cv2.dilate(ink, np.ones((5, 1), np.uint8))  # a slightly slanted line stays one long run
        lines = cv2.morphologyEx(thick, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (horiz, 1)))
        lines = cv2.dilate(lines, np.ones((3, 1), np.uint8)) & ink
        if lines.any():
            t = int(np.median(lines.sum(axis=0)[lines.any(axis=0)]))
            out[lines > 0] = 0
            bridge = cv2.morphologyEx(out, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (1, 2 * t + 3)))
            out |= bridge & lines
    vert = int(max(12, 0.7 * h))  # a printed comb edge spans the cell; a written 1 does not
    if h > vert and text_h < 0.62 * h:
        lines = cv2.morphologyEx(out, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (1, vert)))
        if lines.any():
            t = int(np.median(lines.sum(axis=1)[lines.any(axis=1)]))
            out[lines > 0] = 0
            bridge = cv2.morphologyEx(out, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * t + 3, 1)))
            out |= bridge & lines  # type: ignore[operator]  # cv2 stubs allow float arrays; these masks are uint8
    return out


def _heal_whitened_rows(ink: np.ndarray, max_gap: int = 3) -> np.ndarray:
    """Close the thin blank rows that cross the whole cell where a printed rule was whitened (by the
    pipeline, or by the scanner's dropout), cutting every digit in two halves. Such a row has ink
    right above and right below it in several short stretches (the strokes it cut); two strokes
    lying along each other a pixel apart make one long stretch, which is left alone."""
    h, w = ink.shape
    if h <= max_gap + 2:
        return ink
    d = np.diff(np.c_[np.zeros((h, 1), np.int8), ink.astype(np.int8), np.zeros((h, 1), np.int8)], axis=1)
    lengths = np.flatnonzero(d.ravel() == -1) - np.flatnonzero(d.ravel() == 1)
    stroke = float(np.median(lengths)) if len(lengths) else 2.0
    longest = 2 * stroke + 2
    out = ink.copy()
    for g in range(1, max_gap + 1):
        above, below = ink[:h - g - 1], ink[g + 1:]
        blank = np.ones_like(above)
        for k in range(1, g + 1):
            blank &= 1 - ink[k:h - g - 1 + k]
        cut = above & below & blank  # rows y+1..y+g blank, rows y and y+g+1 inked, per column
        for y in np.flatnonzero(cut.sum(axis=1) >= 6):
            short = [(a, b) for a, b in runs(cut[y] > 0) if b - a <= longest]
            if len(short) >= 3:
                for a, b in short:
                    out[y + 1:y + g + 1, a:b] = 1
    return out


def _strike_lines(ink: np.ndarray) -> list[tuple[float, float, float]]:
    """Lines drawn across the whole cell (a row struck through: one line or the flat cross of the
    row's diagonals; a printed rule): (y at x=0, slope, thickness) each. A line must cover most
    columns, including both ends of the cell, which no written digit does."""
    h, w = ink.shape
    if w < 40 or h < 12:
        return []
    found = cv2.HoughLines(ink * 255, 1, np.pi / 720, int(0.55 * w), min_theta=np.pi / 2 - 0.4,
                           max_theta=np.pi / 2 + 0.4)
    if found is None:
        return []
    xs = np.arange(w)
    edge = max(3, int(0.15 * w))
    out: list[tuple[float, float, float]] = []
    padded = np.vstack([np.zeros((4, w), np.uint8), ink, np.zeros((4, w), np.uint8)])
    above: np.ndarray | None
    below: np.ndarray | None
    above = below = None  # built for the first candidate that covers the cell (most never do)
    for rho, theta in found[:12, 0]:
        s, c = float(np.sin(theta)), float(np.cos(theta))
        if abs(s) < 1e-3:
            continue
        y = (rho - xs * c) / s
        yi = np.round(y).astype(np.int64)
        if yi.min() < -3 or yi.max() > h + 2:
            continue
        # (cast: the stubs type any(axis=0) as a scalar or an array; on a 2-D stack it is an array)
        near = cast(np.ndarray,
                    np.stack([padded[np.clip(yi + 4 + d, 0, h + 7), xs] for d in (-2, -1, 0, 1, 2)]).any(axis=0))
        # (the pipeline whitens a few columns at the crop's edges: the ends need not be fully covered)
        if near.mean() < 0.7 or near[:edge].mean() < 0.45 or near[-edge:].mean() < 0.45:
            continue
        # refit on the columns where the line is alone: the centre and length of its ink run (the run
        # met first at the line's row, then one and two rows off it)
        cols = np.flatnonzero(near)
        y0 = yi[cols] + 4
        hit = np.full(len(cols), -1, np.int64)
        for d in (0, -1, 1, -2, 2):
            y = y0 + d
            inside = (y >= 0) & (y < h + 8)
            inked = (hit < 0) & inside
            inked[inked] = padded[y[inked], cols[inked]] > 0
            hit[inked] = y[inked]
        cols, hit = cols[hit >= 0], hit[hit >= 0]
        if above is None or below is None:
            # per pixel, the nearest paper row above and below in its column: a run's ends
            rows = np.arange(h + 8)[:, None]
            above = np.maximum.accumulate(np.where(padded == 0, rows, -1), axis=0)
            below = np.minimum.accumulate(np.where(padded == 0, rows, h + 8)[::-1], axis=0)[::-1]
        a = above[hit, cols] + 1
        b = below[hit, cols] - 1
        centres = (a + b) / 2 - 4
        lengths_a = (b - a + 1).astype(np.float64)
        t = float(np.median(lengths_a))
        alone = lengths_a <= t + 1
        if alone.sum() < 0.4 * w or t > 0.25 * h:
            continue
        slope, y_at_0 = np.polyfit(cols[alone], centres[alone], 1)
        if any(abs(y_at_0 - o[0]) < 2 * t + 2 and abs(y_at_0 + slope * w - o[0] - o[1] * w) < 2 * t + 2
               for o in out):
            continue  # the same line again
        out.append((float(y_at_0), float(slope), t))
        if len(out) == 3:
            break
    return out


def _remove_strike_lines(ink: np.ndarray, lines: list[tuple[float, float, float]]) -> np.ndarray:
    """Remove the ink of `lines` column by column: a vertical run of ink lying wholly within a line's
    band is the line; a run reaching beyond it is a stroke crossing the line, and is kept whole."""
    if not lines:
        return ink
    h, w = ink.shape
    ys = np.arange(h, dtype=np.float64)[:, None]
    xs = np.arange(w, dtype=np.float64)[None, :]
    band = np.zeros((h, w), bool)
    wide = np.zeros((h, w), bool)
    for y0, slope, t in lines:
        d = np.abs(ys - (y0 + slope * xs))
        band |= d <= t / 2 + 0.5
        wide |= d <= t / 2 + max(1.5, 0.35 * t)
    on = ink.astype(bool)
    start = on & ~np.vstack([np.zeros((1, w), bool), on[:-1]])
    run = np.cumsum(start, axis=0) + np.arange(w)[None, :] * h  # a unique id per run of each column
    ids = run[on]
    n = int(ids.max()) + 1
    touches = np.bincount(ids, weights=band[on], minlength=n) > 0
    beyond = np.bincount(ids, weights=~wide[on], minlength=n) > 0
    out = ink.copy()
    out[on] = np.where(touches[ids] & ~beyond[ids], 0, 1).astype(np.uint8)
    return out


def _loops(ink: np.ndarray, min_area: float) -> np.ndarray:
    """Paper wholly enclosed by ink (the inside of a 0, 6, 8 or 9), at least `min_area` pixels: healing
    may fill it, but the patches must not show it filled (a narrow 0 drawn solid is read as a 1). A
    whitened rule's gap reaches the cell's edge, so it is no loop; a pinhole in a stroke is too small."""
    n, labels = cv2.connectedComponents(1 - ink, connectivity=4)
    edge = np.zeros(n, bool)
    edge[labels[0]] = edge[labels[-1]] = edge[labels[:, 0]] = edge[labels[:, -1]] = True
    loop = ~edge & (np.bincount(labels.ravel(), minlength=n) >= min_area)
    loop[0] = False  # label 0 is the ink itself
    enclosed: np.ndarray = loop[labels]
    return enclosed


def _text_band(stats: np.ndarray, h: int) -> tuple[float, float]:
    """Top and bottom of the written line, from the larger ink pieces."""
    areas = stats[:, cv2.CC_STAT_AREA].astype(np.float64)
    big = areas >= 0.25 * areas.max()
    # pieces in the middle of the crop are the code; spill from the rows above and below is not
    tops = stats[big, cv2.CC_STAT_TOP].astype(np.float64)
    bots = tops + stats[big, cv2.CC_STAT_HEIGHT]
    weights = areas[big]
    centre = (tops + bots) / 2
    keep = np.abs(centre - h / 2) <= 0.42 * h
    if keep.any():
        tops, bots, weights = tops[keep], bots[keep], weights[keep]
    order = np.argsort(weights)[::-1][:6]
    return float(np.median(tops[order])), float(np.median(bots[order]))


def _slice_wide(xs: np.ndarray, x0: int, width: int, text_h: float) -> list[int]:
    """Cut columns (relative to x0) inside a wide piece of ink: minima of its vertical projection."""
    profile = np.bincount(xs - x0, minlength=width).astype(np.float64)
    k = max(1, int(round(0.08 * text_h)))
    smooth = np.convolve(profile, np.ones(2 * k + 1) / (2 * k + 1), mode="same")
    edge = max(2, int(0.18 * text_h))
    step = max(2, int(0.16 * text_h))
    inner = np.arange(edge, width - edge)
    if not len(inner):
        return []
    left = np.r_[np.inf, smooth[:-1]]
    right = np.r_[smooth[1:], np.inf]
    minima = [int(c) for c in inner if smooth[c] <= left[c] and smooth[c] <= right[c]]
    minima.sort(key=lambda c: smooth[c])
    cuts: list[int] = []
    for c in minima:
        if all(abs(c - o) >= step for o in cuts):
            cuts.append(c)
    cuts.sort()
    # no slice wider than a wide digit: add a cut at the lowest column of an over-wide slice
    limit = 0.8 * text_h
    bounds = [0, *cuts, width]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        if a:
            out.append(a)
        while b - a > limit:
            lo, hi = a + int(0.35 * text_h), min(b - edge, a + int(limit))
            if hi <= lo:
                break
            c = lo + int(np.argmin(smooth[lo:hi]))
            out.append(c)
            a = c
    return sorted(set(out))


def segment(crop: np.ndarray, *, heal: bool = True) -> Segmentation | None:
    """Atoms and candidate segments of a postal cell crop; None when it holds no digit-like ink."""
    ink = ink_mask(crop)
    h, w = ink.shape
    ink = _heal_whitened_rows(_remove_strike_lines(ink, _strike_lines(ink)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    if n <= 1:
        return None
    top, bot = _text_band(stats[1:], h)
    text_h = max(6.0, bot - top)
    ink = _remove_long_lines(ink, text_h)
    loops = None
    if heal:  # close the thin gaps left where a ruled line crossing a digit was whitened
        k = max(2, int(round(0.07 * text_h)))
        loops = _loops(ink, max(LOOP_MIN_PX, LOOP_MIN_SHARE * text_h * text_h))
        ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, 1)))
        ink = cv2.morphologyEx(ink, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (1, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    if n <= 1:
        return None
    stats = stats[1:]
    top, bot = _text_band(stats, h)
    text_h = max(6.0, bot - top)
    # drop specks, and pieces lying wholly outside the written line (spill from another row)
    keep = []
    for i, (_x, y, bw, bh, area) in enumerate(stats):
        if max(bw, bh) < 0.12 * text_h or area < 0.004 * text_h * text_h:
            continue
        if bh <= max(2, 0.06 * text_h) and bw >= 0.3 * text_h:  # the end of a removed line
            continue
        overlap = min(y + bh, bot) - max(y, top)
        if overlap < 0.25 * min(bh, text_h):
            continue
        keep.append(i)
    if not keep:
        return None
    # join pieces that share most of their columns (a 5's flag, a broken stroke) into one group
    keep.sort(key=lambda i: stats[i, 0] + stats[i, 2] / 2)
    groups: list[list[int]] = []
    spans: list[list[int]] = []
    for i in keep:
        x0, x1 = int(stats[i, 0]), int(stats[i, 0] + stats[i, 2])
        if groups:
            g0, g1 = spans[-1]
            overlap = min(x1, g1) - max(x0, g0)
            narrow = min(x1 - x0, g1 - g0)
            if overlap >= 0.6 * narrow and max(x1, g1) - min(x0, g0) <= MAX_SEGMENT_WIDTH * text_h:
                groups[-1].append(i)
                spans[-1] = [min(x0, g0), max(x1, g1)]
                continue
        groups.append([i])
        spans.append([x0, x1])
    # atoms: each group, or slices of a group too wide for one digit
    atoms = np.full((h, w), -1, np.int16)
    boxes: list[tuple[int, int, int, int]] = []
    for members, (g0, g1) in zip(groups, spans):
        mask = np.isin(labels, np.asarray(members) + 1)
        ys, xs = np.nonzero(mask)
        cuts = _slice_wide(xs, g0, g1 - g0, text_h) if g1 - g0 > 0.85 * text_h else []
        bounds = [g0, *(g0 + c for c in cuts), g1]
        for a, b in zip(bounds[:-1], bounds[1:]):
            sel = (xs >= a) & (xs < b)
            if sel.sum() < 3:
                continue
            atoms[ys[sel], xs[sel]] = len(boxes)
            boxes.append((int(xs[sel].min()), int(ys[sel].min()), int(xs[sel].max()) + 1, int(ys[sel].max()) + 1))
    if not boxes:
        return None
    if loops is not None:  # the pieces are cut from the closed ink, but drawn with their loops open
        atoms[loops] = -1
    segments = []
    for i in range(len(boxes)):
        for j in range(i + 1, min(len(boxes), i + MAX_ATOMS_PER_SEGMENT) + 1):
            x0 = min(b[0] for b in boxes[i:j])
            x1 = max(b[2] for b in boxes[i:j])
            if j - i > 1 and x1 - x0 > MAX_SEGMENT_WIDTH * text_h:
                break
            gaps = [boxes[k + 1][0] - max(b[2] for b in boxes[i:k + 1]) for k in range(i, j - 1)]
            if gaps and max(gaps) > MAX_INNER_GAP * text_h:
                break
            segments.append((i, j))
    patches = np.stack([_patch(atoms, boxes, i, j, text_h) for i, j in segments])
    return Segmentation(atoms, tuple(boxes), tuple(segments), patches, float(text_h))


def _patch(atoms: np.ndarray, boxes: list[tuple[int, int, int, int]], i: int, j: int, text_h: float) -> np.ndarray:
    x0 = min(b[0] for b in boxes[i:j])
    y0 = min(b[1] for b in boxes[i:j])
    x1 = max(b[2] for b in boxes[i:j])
    y1 = max(b[3] for b in boxes[i:j])
    region = atoms[y0:y1, x0:x1]
    mask = ((region >= i) & (region < j)).astype(np.float32)
    return normalise_digit(mask, text_h)


def normalise_digit(mask: np.ndarray, text_h: float) -> np.ndarray:
    """A piece of ink drawn as the classifier sees it: scaled by the text height (a full-height
    digit is DIGIT_PX tall, a fragment stays small), centred by its centre of mass in SIZE x SIZE."""
    bh, bw = mask.shape
    scale = DIGIT_PX / max(text_h, 1.0)
    if max(bh, bw) * scale > MAX_PX:
        scale = MAX_PX / max(bh, bw)
    nh, nw = max(1, int(round(bh * scale))), max(1, int(round(bw * scale)))
    small = cv2.resize(mask, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    out = np.zeros((SIZE, SIZE), np.float32)
    total = float(small.sum())
    if total <= 0:
        return out
    cy = float((small.sum(axis=1) * np.arange(nh)).sum() / total)
    cx = float((small.sum(axis=0) * np.arange(nw)).sum() / total)
    oy = int(round(SIZE / 2 - cy - 0.5))
    ox = int(round(SIZE / 2 - cx - 0.5))
    oy = min(max(oy, 0), SIZE - nh)
    ox = min(max(ox, 0), SIZE - nw)
    out[oy:oy + nh, ox:ox + nw] = small
    return np.clip(out, 0.0, 1.0)


# --- the model -----------------------------------------------------------------------------------------

_THIN = np.ones((2, 2), np.uint8)
_SHEAR = 0.15  # slant of the sheared views, in pixels across per pixel down


def views(patch: np.ndarray) -> list[np.ndarray]:
    """The views of a patch that test-time augmentation averages over: as cut, bolder, thinner (when
    enough ink is left), slanted both ways. A digit read the same way in every view is read surely;
    one that turns into another digit in some views is not, and the confidence says so."""
    thin = cv2.erode(patch, _THIN)
    out = [patch, cv2.dilate(patch, _THIN), thin if (thin > 0.5).sum() >= 12 else patch]
    for k in (-_SHEAR, _SHEAR):
        m = np.array([[1, k, -k * SIZE / 2], [0, 1, 0]], np.float32)
        out.append(cv2.warpAffine(patch, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR))
    return out


class DigitModel:
    """The digit classifier: log-probabilities of the 11 classes for a batch of patches.

    With `tta` (set by the training script in the model's facts, so that calibration and use agree) a
    patch's probabilities are the mean over its `views`."""

    def __init__(self, onnx_bytes: bytes, calibration: dict[str, Any], meta: dict[str, Any]):
        self.calibration = calibration
        self.meta = meta
        self.tta = bool(meta.get("test_time_augmentation", False))
        self._run = _session(onnx_bytes)

    def log_proba(self, patches: np.ndarray) -> np.ndarray:
        """(N, SIZE, SIZE) float32 0..1 -> (N, 11) log-probabilities."""
        if len(patches) == 0 or not self.tta:
            return self.plain_log_proba(patches)
        stack = np.stack([v for p in patches for v in views(p)])
        lp = self.plain_log_proba(stack).reshape(len(patches), -1, N_CLASSES)
        top = lp.max(axis=1, keepdims=True)
        mean: np.ndarray = (top + np.log(np.exp(lp - top).mean(axis=1, keepdims=True)))[:, 0]
        return mean

    def plain_log_proba(self, patches: np.ndarray) -> np.ndarray:
        """Log-probabilities of the patches as they are, without test-time augmentation."""
        if len(patches) == 0:
            return np.zeros((0, N_CLASSES), np.float32)
        logits = self._run(np.ascontiguousarray(patches[:, None], dtype=np.float32))
        logits = logits - logits.max(axis=1, keepdims=True)
        log_proba: np.ndarray = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return log_proba


def _session(onnx_bytes: bytes) -> Callable[[np.ndarray], np.ndarray]:
    # no OpenCV dnn fallback: it returns one row for a batch of patches, and the graph is int8
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise MissingDependencyError("onnxruntime is not installed: the digit model cannot run",
                                     hint="reinstall scan_pipeline (`make install`)") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run_ort(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = session.run(None, {name: x})[0].astype(np.float32)
        return out

    return run_ort


def model_from_bytes(blob: bytes) -> DigitModel:
    data = np.load(io.BytesIO(blob), allow_pickle=False)
    calibration = json.loads(bytes(data["calibration"]).decode("utf-8"))
    meta = json.loads(bytes(data["meta"]).decode("utf-8"))
    return DigitModel(bytes(data["onnx"]), calibration, meta)


@functools.lru_cache(maxsize=1)
def load_model() -> DigitModel:
    """The bundled digit model, loaded once per process (so once per worker)."""
    try:
        blob = (importlib.resources.files("scan_pipeline") / "data" / MODEL_FILE).read_bytes()
        return model_from_bytes(blob)
    except (OSError, KeyError, ValueError) as exc:
        raise MissingDependencyError(
            f"cannot load the bundled digit model scan_pipeline/data/{MODEL_FILE}: {exc}",
            hint="reinstall scan_pipeline; rebuild: python -m scan_pipeline.training.train_digits") from exc
