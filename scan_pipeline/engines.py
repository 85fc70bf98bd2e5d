"""OCR engines behind one small protocol, so stages can be tested with fakes.

Tesseract runs through its C API (tesserocr: one engine per worker, no process per cell); where
tesserocr cannot load, pytesseract runs the `tesseract` command instead (slower, same results).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from .errors import MissingDependencyError

DIGITS = "0123456789"

TESSDATA_DIRS = (
    "/usr/share/tesseract-ocr/5/tessdata",
    "/usr/share/tesseract-ocr/4.00/tessdata",
    "/usr/share/tessdata",
    "/usr/local/share/tessdata",
)


@dataclass(frozen=True)
class OcrResult:
    text: str
    confidence: float  # 0..1


class OcrEngine(Protocol):
    name: str

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        """Read one line of text from a gray image (dark ink on white)."""


def find_tessdata(lang: str = "fra") -> str:
    candidates = [os.environ.get("TESSDATA_PREFIX", ""), *TESSDATA_DIRS]
    for d in candidates:
        if d and (Path(d) / f"{lang}.traineddata").exists():
            return d
    raise MissingDependencyError(
        f"Tesseract's language data for {lang!r} is not installed",
        hint=f"apt-get install tesseract-ocr tesseract-ocr-{lang} (or run `make install`)")


class TesserocrEngine:
    """Tesseract through its API; one instance per worker (it is not thread-safe)."""

    name = "tesseract"

    def __init__(self, lang: str = "fra"):
        import tesserocr

        self._tesserocr = tesserocr
        path = find_tessdata(lang)
        self._api = tesserocr.PyTessBaseAPI(path=path, lang=lang, psm=tesserocr.PSM.SINGLE_LINE,
                                            oem=tesserocr.OEM.LSTM_ONLY)
        self._whitelist: str | None = None

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        if whitelist != self._whitelist:
            self._api.SetVariable("tessedit_char_whitelist", whitelist or "")
            self._whitelist = whitelist
        self._api.SetImage(Image.fromarray(image))
        text = self._api.GetUTF8Text().strip()
        confidences = [c for c in self._api.AllWordConfidences() if c >= 0]
        conf = float(np.mean(confidences)) / 100.0 if confidences and text else 0.0
        return OcrResult(text, conf)

    def close(self) -> None:
        self._api.End()


class PytesseractEngine:
    """The `tesseract` command, one process per call: the fallback where tesserocr cannot load."""

    name = "tesseract-cli"

    def __init__(self, lang: str = "fra"):
        if not shutil.which("tesseract"):
            raise MissingDependencyError("the tesseract command is not installed",
                                         hint="apt-get install tesseract-ocr tesseract-ocr-fra")
        find_tessdata(lang)
        import pytesseract

        self._pt = pytesseract
        self._lang = lang

    def read_line(self, image: np.ndarray, whitelist: str | None = None) -> OcrResult:
        config = "--psm 7 --oem 1"
        if whitelist:
            config += f" -c tessedit_char_whitelist={whitelist}"
        data = self._pt.image_to_data(Image.fromarray(image), lang=self._lang, config=config,
                                      output_type=self._pt.Output.DICT)
        words = [(w, float(c)) for w, c in zip(data["text"], data["conf"]) if w.strip() and float(c) >= 0]
        if not words:
            return OcrResult("", 0.0)
        return OcrResult(" ".join(w for w, _ in words), float(np.mean([c for _, c in words])) / 100.0)

    def close(self) -> None:
        pass


def tesseract_engine(lang: str = "fra") -> OcrEngine:
    """The fastest Tesseract binding that loads here."""
    os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # one thread per worker: workers are the parallelism
    try:
        return TesserocrEngine(lang)
    except ImportError:
        return PytesseractEngine(lang)
    except RuntimeError:  # tesserocr could not initialise with this tessdata
        return PytesseractEngine(lang)
