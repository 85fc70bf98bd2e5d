"""Why a photo cannot be used, in words a person can act on (issue #23).

Measured only on a page whose grid was not found, so that the answer is not just "no grid": the
sheet too small in the photo, too dark, too blurred, or cut by the photo's edge, each against the
threshold below, and what to do about it. The thresholds sit below what the pipeline still reads
(docs/benchmarks.md, bench_photos.py): a photo is never refused for them, only explained.
"""

from __future__ import annotations

import cv2
import numpy as np

from scan_pipeline.core.records import FlatPage, PageImage, PageIssue
from scan_pipeline.page.load import as_gray
from scan_pipeline.page.normalise import on_a_table

MIN_DPI = 75.0  # across the sheet: below, printed row numbers are a few pixels high
MIN_PAPER_LEVEL = 100.0  # the paper's brightness (0-255) in the photo: below, too dark
MIN_SHARPNESS = 1.2  # the least steep edge direction (see `sharpness`): below, blurred or shaken
ADVICE = "retake the photo from above, the whole sheet in view, in even light, holding the phone still"


def sharpness(gray: np.ndarray) -> float:
    """How steep the page's edges are in their least steep direction, per level of contrast.

    A shaken phone smears along one direction: the edges across it stay steep, those along it
    do not, so the least steep of four directions tells the blur whatever its direction. The
    image is smoothed first so that sensor noise does not count as sharpness."""
    g = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.2)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    contrast = float(np.percentile(g, 95) - np.percentile(g, 2))
    steepest = [float(np.percentile(np.abs(gx * np.cos(a) + gy * np.sin(a)), 99.8))
                for a in np.deg2rad([0.0, 45.0, 90.0, 135.0])]
    return min(steepest) / max(contrast, 1.0)


def _touches_edge(gray: np.ndarray) -> bool:
    """The bright paper reaches the photo's edge along a good part of a side: the sheet is cut."""
    small = cv2.resize(gray, None, fx=400 / max(gray.shape), fy=400 / max(gray.shape), interpolation=cv2.INTER_AREA)
    _, bright = cv2.threshold(cv2.GaussianBlur(small, (5, 5), 0), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    sides = (bright[:2, :], bright[-2:, :], bright[:, :2], bright[:, -2:])
    return any(float((s > 0).mean()) > 0.3 for s in sides)


def photo_problems(page: PageImage, flat: FlatPage, paper_height_mm: float) -> list[str]:
    """What is wrong with a photo whose grid was not found, each with its measure; [] if nothing."""
    gray = as_gray(page.pixels)
    if not flat.photo and not on_a_table(gray):
        return []  # a scan (paper up to its edges): none of this explains it
    problems = []
    if flat.photo:  # the sheet's height in the photo: its flat page's top and bottom, mapped back
        h, w = flat.pixels.shape
        ends = np.array([[[w / 2, 0.0], [w / 2, float(h)]]])
        top, bottom = cv2.perspectiveTransform(ends, np.linalg.inv(np.array(flat.transform)))[0]
        dpi = float(np.linalg.norm(bottom - top)) / (paper_height_mm / 25.4)
    else:
        dpi = max(gray.shape) / (paper_height_mm / 25.4)
    if dpi < MIN_DPI:
        problems.append(f"the sheet is too small in the photo (about {dpi:.0f} dpi, at least {MIN_DPI:.0f} needed)")
    paper = float(np.percentile(gray, 90))
    if paper < MIN_PAPER_LEVEL:
        problems.append(f"the photo is too dark (paper at {paper:.0f} of 255, at least {MIN_PAPER_LEVEL:.0f})")
    sharp = sharpness(gray)
    if sharp < MIN_SHARPNESS:
        problems.append(f"the photo is blurred or shaken (sharpness {sharp:.2f}, at least {MIN_SHARPNESS})")
    if not flat.photo and _touches_edge(gray):
        problems.append("an edge or a corner of the sheet is out of the photo")
    return problems


def photo_issue(page: PageImage, flat: FlatPage, paper_height_mm: float) -> PageIssue | None:
    problems = photo_problems(page, flat, paper_height_mm)
    if not problems:
        return None
    return PageIssue("page_photo_unusable", "this photo cannot be used: " + "; ".join(problems), ADVICE)
