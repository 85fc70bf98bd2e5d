"""Cut a row into its cells: crop with a margin, remove the ruled lines, measure the ink."""

from __future__ import annotations

import cv2
import numpy as np

from .config import CellsConfig
from .grid import PageMasks
from .records import Box, GridRow, RowCells


def _clip(box: Box, shape: tuple[int, ...]) -> Box:
    return Box(max(0, box.x0), max(0, box.y0), min(shape[1], box.x1), min(shape[0], box.y1))


def clean_ink(ink: np.ndarray, min_size: int) -> np.ndarray:
    """Ink without specks: connected blobs smaller than min_size in both directions are noise."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink, connectivity=8)
    keep = (stats[:, cv2.CC_STAT_WIDTH] >= min_size) | (stats[:, cv2.CC_STAT_HEIGHT] >= min_size)
    keep[0] = False
    return np.where(keep[labels], 255, 0).astype(np.uint8)


def cut_row(gray: np.ndarray, masks: PageMasks, row: GridRow, config: CellsConfig) -> RowCells:
    """Each writing cell of a row, cropped with a margin and its ruled lines whitened."""
    lines = masks.lines_wide
    margin = int(row.box.height * config.margin)
    min_size = max(2, int(row.box.height * config.speck_px))
    crops, inks = [], []
    for column, box in row.cells[1:]:  # the first column is the printed row number
        outer = _clip(Box(box.x0 - margin, box.y0 - margin, box.x1 + margin, box.y1 + margin), gray.shape)
        crop = gray[outer.y0:outer.y1, outer.x0:outer.x1].copy()
        line_part = lines[outer.y0:outer.y1, outer.x0:outer.x1] > 0
        crop[line_part] = 255
        ink = masks.ink[outer.y0:outer.y1, outer.x0:outer.x1].copy()
        ink[line_part] = 0
        ink = clean_ink(ink, min_size)
        inner = ink[box.y0 - outer.y0:box.y1 - outer.y0, box.x0 - outer.x0:box.x1 - outer.x0]
        crop[ink == 0] = np.maximum(crop[ink == 0], 235)  # paper texture and specks to white
        crops.append((column, crop))
        inks.append((column, float((inner > 0).mean()) if inner.size else 0.0))
    return RowCells(row_number=row.number or 0, boxes=row.cells, crops=tuple(crops), ink=tuple(inks))


def trim_to_ink(crop: np.ndarray, threshold: int = 160, pad: int = 4) -> np.ndarray | None:
    """The crop cut to its ink, or None when it holds none."""
    ys, xs = np.nonzero(crop < threshold)
    if len(xs) < 8:
        return None
    y0, y1 = max(0, ys.min() - pad), min(crop.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(crop.shape[1], xs.max() + pad + 1)
    return crop[y0:y1, x0:x1]


def prepare_for_ocr(crop: np.ndarray, height: int) -> np.ndarray | None:
    """Trim to the ink, scale to a fixed text height, add a white border, as Tesseract likes."""
    trimmed = trim_to_ink(crop)
    if trimmed is None:
        return None
    scale = height / max(trimmed.shape[0], 1)
    scaled = cv2.resize(trimmed, None, fx=scale, fy=scale,
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(scaled, 16, 16, 16, 16, cv2.BORDER_CONSTANT, value=255)
