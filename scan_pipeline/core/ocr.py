"""The OCR engine seam: one small protocol, so stages take any engine and tests take fakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

DIGITS = "0123456789"


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float  # 0..1
    words: tuple[tuple[str, int, int], ...] = ()  # each word with its first and last column + 1 in the image


class OcrEngine(Protocol):
    name: str

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        """Read one line of text from a gray image (dark ink on white)."""
