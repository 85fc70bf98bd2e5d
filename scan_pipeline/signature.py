"""Signature state of a row: signed, empty, or struck out (a line through the row)."""

from __future__ import annotations

import cv2
import numpy as np

from .config import SignatureConfig
from .records import SignatureState


def is_struck(row_ink: np.ndarray, config: SignatureConfig) -> bool:
    """A long straight stroke across the written part of the row (lines already removed)."""
    h, w = row_ink.shape
    if w == 0 or not row_ink.any():
        return False
    length = int(w * config.strike_length)
    segments = cv2.HoughLinesP(row_ink, 1, np.pi / 180, threshold=int(length * 0.5), minLineLength=length,
                               maxLineGap=max(4, h // 6))
    if segments is None:
        return False
    x0, y0, x1, y1 = segments[:, 0, :].T.astype(float)
    angles = np.degrees(np.abs(np.arctan2(y1 - y0, x1 - x0)))
    angles = np.minimum(angles, 180 - angles)
    return bool((angles <= config.strike_max_degrees).any())


def signature_state(signature_ink: float, row_ink: np.ndarray, config: SignatureConfig) -> SignatureState:
    if is_struck(row_ink, config):
        return "struck"
    return "signed" if signature_ink >= config.signed_ink else "empty"
