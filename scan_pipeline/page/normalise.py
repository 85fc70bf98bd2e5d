"""Page normalisation: gray, flat lighting, page outline of photos, quarter turns and deskew.

The output is an upright gray page in which ruled lines are horizontal and vertical. Every step
keeps the 3x3 transform from the source image, so that boxes found on the flat page can be drawn
back on the scan.
"""

from __future__ import annotations

import cv2
import numpy as np

from scan_pipeline.core.records import FlatPage, PageImage
from scan_pipeline.page.load import as_gray

PHOTO_DPI = 200  # a photographed page is warped flat at this resolution
MAX_DPI = 200  # pages scanned finer are reduced to this working resolution: recognition needs no more


def flatten_light(gray: np.ndarray, sharp: bool = False) -> np.ndarray:
    """Divide by the paper's brightness so shadows and tints become white paper.

    `sharp` (photos): the paper's light is followed up to a hard shadow's edge instead of smoothed
    across it, which would leave a dark band along the edge, taken for writing in a blank cell."""
    small = cv2.resize(gray, None, fx=1 / 8, fy=1 / 8, interpolation=cv2.INTER_AREA)
    paper = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 9)))
    paper = cv2.GaussianBlur(paper, (0, 0), 0.7 if sharp else 2)
    paper = cv2.resize(paper, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.divide(gray, np.maximum(paper, 1), scale=255)


def order_corners(pts: np.ndarray) -> np.ndarray:
    """Top-left, top-right, bottom-right, bottom-left."""
    s = pts.sum(axis=1)
    d = np.diff(pts, axis=1)[:, 0]
    return np.array([pts[np.argmin(s)], pts[np.argmin(d)], pts[np.argmax(s)], pts[np.argmax(d)]], np.float32)


def _quad_from_mask(mask: np.ndarray) -> np.ndarray | None:
    """The page's four corners from a mask of the page, or None if it does not look like a sheet."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    page = max(contours, key=cv2.contourArea)
    if not 0.2 < cv2.contourArea(page) / mask.size < 0.93:
        return None
    approx = cv2.approxPolyDP(page, 0.02 * cv2.arcLength(page, True), True)
    pts = approx.reshape(-1, 2).astype(np.float32) if len(approx) == 4 else cv2.boxPoints(cv2.minAreaRect(page))
    corners = refine_corners(page.reshape(-1, 2).astype(np.float32), order_corners(np.asarray(pts, np.float32)))
    sides = [float(np.linalg.norm(corners[(i + 1) % 4] - corners[i])) for i in range(4)]
    # a sheet seen in perspective: opposite sides of similar length, a paper-like aspect
    if min(sides) < 50 or not all(0.7 < sides[i] / sides[i + 2] < 1.43 for i in (0, 1)):
        return None
    aspect = (sides[1] + sides[3]) / (sides[0] + sides[2])
    if not (1.1 < aspect < 1.8 or 1 / 1.8 < aspect < 1 / 1.1):
        return None
    if not cv2.isContourConvex(corners.reshape(-1, 1, 2)):
        return None
    return corners


def on_a_table(gray: np.ndarray) -> bool:
    """A scan has paper up to its edges; a photo has the table there, darker than the paper."""
    h, w = gray.shape
    m = max(2, min(h, w) // 50)
    frame = np.concatenate([gray[:m].ravel(), gray[-m:].ravel(), gray[:, :m].ravel(), gray[:, -m:].ravel()])
    paper = np.percentile(gray[h // 4:3 * h // 4, w // 4:3 * w // 4], 90)
    return bool(np.median(frame) <= 0.8 * paper)


def find_page_outline(gray: np.ndarray) -> np.ndarray | None:
    """The four corners of a sheet lying on a darker background, or None for a scan.

    The page is first taken as the bright region; where uneven light makes part of it as dark as
    the table, as the region inside the page's edge instead.
    """
    scale = 800 / max(gray.shape)
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (5, 5), 0)
    _, bright = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if not on_a_table(small):
        return None
    bright = cv2.morphologyEx(bright, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    candidates = [_quad_from_mask(bright)]
    # The convex hull of the long edges: the page's border, even where a shadow makes part of the
    # page as dark as the table (the bright region then misses a corner of the page).
    edges = cv2.Canny(small, 15, 45)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(edges, connectivity=8)
    long = np.flatnonzero(np.hypot(stats[:, 2], stats[:, 3]) > 0.05 * max(small.shape))
    long = long[long > 0]
    if len(long):
        ys, xs = np.nonzero(np.isin(labels, long))
        hull = cv2.convexHull(np.stack([xs, ys], axis=1).astype(np.int32))
        filled = np.zeros_like(edges)
        cv2.drawContours(filled, [hull], -1, 255, thickness=cv2.FILLED)
        candidates.append(_quad_from_mask(filled))
    found = [c for c in candidates if c is not None]
    if not found:
        return None
    best: np.ndarray = max(found, key=lambda c: cv2.contourArea(c.reshape(-1, 1, 2))) / scale
    return best


def refine_corners(contour: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Fit a straight line to each side of the outline and intersect them: corners to a pixel,
    where a polygon approximation cuts them off."""
    lines = []
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        side = b - a
        length = float(np.linalg.norm(side))
        if length < 10:
            return corners
        t = (contour - a) @ side / length ** 2  # position along the side
        rel = contour - a
        dist = np.abs(side[0] * rel[:, 1] - side[1] * rel[:, 0]) / length  # distance from it
        near = contour[(t > 0.1) & (t < 0.9) & (dist < max(3.0, length * 0.02))]
        if len(near) < 5:
            return corners
        vx, vy, x0, y0 = cv2.fitLine(near, cv2.DIST_HUBER, 0, 0.01, 0.01).ravel()
        lines.append((np.array([x0, y0]), np.array([vx, vy])))
    points: list[np.ndarray] = []
    for i in range(4):
        (p1, d1), (p2, d2) = lines[i - 1], lines[i]
        m = np.array([d1, -d2]).T
        if abs(np.linalg.det(m)) < 1e-6:
            return corners
        t1, _ = np.linalg.solve(m, p2 - p1)
        points.append(p1 + t1 * d1)
    refined = np.array(points, np.float32)
    return refined if np.abs(refined - corners).max() < 20 else corners


def warp_page(gray: np.ndarray, corners: np.ndarray, aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Warp the outlined sheet to an upright rectangle of the paper's aspect (height / width)."""
    tl, tr, br, bl = corners
    width_px = (np.linalg.norm(tr - tl) + np.linalg.norm(br - bl)) / 2
    height_px = (np.linalg.norm(bl - tl) + np.linalg.norm(br - tr)) / 2
    if width_px > height_px:  # the sheet lies sideways: start from its top-left as read
        corners = np.array([bl, tl, tr, br], np.float32)
    out_w = int(round(PHOTO_DPI * 8.27))
    out_h = int(round(out_w * aspect))
    dst = np.array([[0, 0], [out_w - 1, 0], [out_w - 1, out_h - 1], [0, out_h - 1]], np.float32)
    H = cv2.getPerspectiveTransform(corners.astype(np.float32), dst)
    flat = cv2.warpPerspective(gray, H, (out_w, out_h), flags=cv2.INTER_CUBIC, borderValue=255)
    return flat, H


def estimate_skew(gray: np.ndarray, max_degrees: float = 10.0) -> float:
    """Skew in degrees (positive: lines go up to the right) from the page's long straight lines.

    A standard Hough transform restricted to near-horizontal angles, on a small copy of the page:
    the ruled lines and the text baselines vote. The angle is then refined to 0.02 degree on a
    finer copy, as the one at which the ink's row profile is sharpest.
    """
    scale = 1200 / gray.shape[1]
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ink = cv2.adaptiveThreshold(small, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY_INV, 25, 15)
    # thin horizontal-ish runs only: cuts the votes of handwriting and noise
    ink = cv2.morphologyEx(ink, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (9, 1)))
    tiny = cv2.resize(ink, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_NEAREST)
    lines = cv2.HoughLines(tiny, 1, np.radians(0.1), threshold=int(tiny.shape[1] * 0.25),
                           min_theta=np.radians(90 - max_degrees), max_theta=np.radians(90 + max_degrees))
    coarse = 0.0 if lines is None else float(90.0 - np.degrees(np.median(lines[:12, 0, 1])))
    # Refine: the angle at which the ink's row profile is sharpest (lines fall in fewest rows).
    ys, xs = np.nonzero(ink)
    if len(xs) < 100:
        return coarse
    if len(xs) > 40_000:  # a sample is as sharp and much faster
        pick = np.random.default_rng(0).choice(len(xs), 40_000, replace=False)
        ys, xs = ys[pick], xs[pick]
    best, best_score = coarse, -1.0
    for angle in np.arange(coarse - 0.3, coarse + 0.3001, 0.02):
        t = np.radians(angle)
        rows = np.round(ys + xs * np.tan(t)).astype(np.int64)
        counts = np.bincount(rows - rows.min())
        score = float(np.dot(counts, counts))
        if score > best_score:
            best, best_score = float(angle), score
    return best


def rotate(gray: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise by `degrees` about the centre, keeping the size; white fill."""
    h, w = gray.shape
    if degrees % 360 == 180:
        return np.ascontiguousarray(gray[::-1, ::-1]), np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1.0]])
    M = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    out = cv2.warpAffine(gray, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=255)
    return out, np.vstack([M, [0, 0, 1]])


def quarter_turn(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn a landscape image a quarter clockwise."""
    h, w = gray.shape
    return np.ascontiguousarray(np.rot90(gray, k=-1)), np.array([[0, -1, h - 1], [1, 0, 0], [0, 0, 1.0]])


def normalise_page(page: PageImage, paper_aspect: float = 297 / 210) -> FlatPage:
    gray = as_gray(page.pixels)
    H = np.eye(3)
    dpi = page.dpi
    if dpi > MAX_DPI * 1.1:
        f = MAX_DPI / dpi
        gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
        H = np.diag([f, f, 1.0]) @ H
        dpi = MAX_DPI
    corners = find_page_outline(gray)
    photo = corners is not None
    rotation = 0
    if corners is not None:
        gray, W = warp_page(gray, corners, paper_aspect)
        H = W @ H
        dpi = PHOTO_DPI
    elif gray.shape[1] > gray.shape[0] * 1.15:
        gray, R = quarter_turn(gray)
        H = R @ H
        rotation = 90
    gray = flatten_light(gray, sharp=photo)
    skew = estimate_skew(gray)
    if abs(skew) > 0.02:
        gray, R = rotate(gray, -skew)
        H = R @ H
    return FlatPage(ref=page.ref, pixels=gray, dpi=dpi, rotation=rotation, skew_deg=skew,
                    transform=tuple(tuple(float(v) for v in row) for row in H), photo=photo)


def turn_upside_down(flat: FlatPage) -> FlatPage:
    gray, R = rotate(flat.pixels, 180)
    H = R @ np.array(flat.transform)
    return FlatPage(ref=flat.ref, pixels=gray, dpi=flat.dpi, rotation=(flat.rotation + 180) % 360,
                    skew_deg=flat.skew_deg, transform=tuple(tuple(float(v) for v in row) for row in H),
                    photo=flat.photo)
